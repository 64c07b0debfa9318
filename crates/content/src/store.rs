//! The content-addressed store on disk.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

use crate::rows::{Format, RowError, content_hash, row_hash, rows};

/// What the store knows of a file: what to put in a `contribute` call, and the row hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The Merkle root of the row hashes.
    pub content_hash: B256,
    /// The uploaded file's name.
    pub file_name: String,
    /// How it was split.
    pub format: Format,
    /// Number of rows.
    pub rows: u64,
    /// Size of the uploaded file in bytes.
    pub size: u64,
    /// Each row's hash, in order.
    pub row_hashes: Vec<B256>,
}

/// A page of stored rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowsPage {
    /// How many rows the content has.
    pub total: usize,
    /// How its file was split, which says how its rows are read ([`crate::row_text`]).
    pub format: Format,
    /// The rows asked for.
    pub rows: Vec<String>,
}

/// Why the store refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The file's extension is not a supported text format.
    #[error("unsupported file type {0:?}: upload .txt, .md, .jsonl or .csv")]
    UnsupportedType(String),
    /// The file is larger than the store accepts.
    #[error("the file is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file cannot be split into rows.
    #[error(transparent)]
    Rows(#[from] RowError),
    /// What was sent is not acceptable (an adapter without its config, or not the registered one).
    #[error("{0}")]
    Invalid(String),
    /// Another account published this adapter: only it replaces what is stored.
    #[error("adapter {0} was published by {1}: only that account replaces it")]
    Taken(B256, alloy_primitives::Address),
    /// No content has this hash.
    #[error("no content with hash {0}")]
    NotFound(B256),
    /// Stored content no longer matches its hash.
    #[error("stored content {0} is corrupt: {1}")]
    Corrupt(B256, String),
    /// The disk failed.
    #[error("content store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Files by content hash under one directory: `<hash>/manifest.json` and `<hash>/rows.jsonl`
/// (one JSON string per row).
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
    max_file_bytes: u64,
}

impl ContentStore {
    /// Opens (creating) the store in `dir`, accepting files up to `max_file_bytes`.
    pub fn open(dir: impl Into<PathBuf>, max_file_bytes: u64) -> Result<Self, ContentError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            max_file_bytes,
        })
    }

    /// The largest file accepted, in bytes.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// Splits, hashes and stores a file; storing the same content again is a no-op. Nothing is
    /// written unless the whole file is acceptable.
    pub fn put(&self, file_name: &str, bytes: &[u8]) -> Result<Manifest, ContentError> {
        let format = Format::from_file_name(file_name)
            .ok_or_else(|| ContentError::UnsupportedType(file_name.to_string()))?;
        let size = bytes.len() as u64;
        if size > self.max_file_bytes {
            return Err(ContentError::TooLarge {
                size,
                max: self.max_file_bytes,
            });
        }
        let rows = rows(format, bytes)?;
        let row_hashes: Vec<B256> = rows.iter().map(|r| row_hash(r)).collect();
        let manifest = Manifest {
            content_hash: content_hash(&row_hashes),
            file_name: file_name.to_string(),
            format,
            rows: rows.len() as u64,
            size,
            row_hashes,
        };
        let target = self.path(manifest.content_hash);
        if target.join("manifest.json").exists() {
            return self.manifest(manifest.content_hash);
        }
        // Written in a scratch directory and renamed into place, so a crash never leaves a
        // half-written entry under a hash.
        let scratch = tempdir_in(&self.dir)?;
        let mut out = fs::File::create(scratch.join("rows.jsonl"))?;
        for row in &rows {
            serde_json::to_writer(&mut out, row).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.sync_all()?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        fs::write(scratch.join("manifest.json"), json)?;
        match fs::rename(&scratch, &target) {
            Ok(()) => Ok(manifest),
            // Another upload of the same content won the race.
            Err(_) if target.join("manifest.json").exists() => {
                fs::remove_dir_all(&scratch)?;
                self.manifest(manifest.content_hash)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The manifest of stored content.
    pub fn manifest(&self, hash: B256) -> Result<Manifest, ContentError> {
        let text =
            fs::read(self.path(hash).join("manifest.json")).map_err(|e| not_found(e, hash))?;
        serde_json::from_slice(&text).map_err(|e| ContentError::Corrupt(hash, e.to_string()))
    }

    /// Rows `offset..offset + limit` of stored content and its row count, each row checked
    /// against its hash in the manifest. Reads only as far as the page ends, so a client paging
    /// through a large file does not make the node read it whole for every page.
    pub fn rows_page(
        &self,
        hash: B256,
        offset: usize,
        limit: usize,
    ) -> Result<RowsPage, ContentError> {
        let manifest = self.manifest(hash)?;
        if content_hash(&manifest.row_hashes) != hash {
            return Err(ContentError::Corrupt(
                hash,
                "row hashes do not match".into(),
            ));
        }
        let file =
            fs::File::open(self.path(hash).join("rows.jsonl")).map_err(|e| not_found(e, hash))?;
        let mut page = Vec::new();
        for (line, expected) in BufReader::new(file)
            .lines()
            .zip(&manifest.row_hashes)
            .skip(offset)
            .take(limit)
        {
            let row = serde_json::from_str::<String>(&line?)
                .map_err(|e| ContentError::Corrupt(hash, e.to_string()))?;
            if row_hash(&row) != *expected {
                return Err(ContentError::Corrupt(hash, "a row does not match".into()));
            }
            page.push(row);
        }
        let wanted = manifest.row_hashes.len().saturating_sub(offset).min(limit);
        if page.len() != wanted {
            return Err(ContentError::Corrupt(hash, "rows are missing".into()));
        }
        Ok(RowsPage {
            total: manifest.row_hashes.len(),
            format: manifest.format,
            rows: page,
        })
    }

    /// Deletes stored content (an upload nobody contributed). Deleting what is not there is not
    /// an error.
    pub fn remove(&self, hash: B256) -> Result<(), ContentError> {
        match fs::remove_dir_all(self.path(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn path(&self, hash: B256) -> PathBuf {
        self.dir.join(format!("{hash:x}"))
    }
}

fn not_found(e: std::io::Error, hash: B256) -> ContentError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ContentError::NotFound(hash)
    } else {
        e.into()
    }
}

/// A fresh scratch directory inside `dir` (same file system, so a rename is atomic).
fn tempdir_in(dir: &Path) -> std::io::Result<PathBuf> {
    for attempt in 0u32.. {
        let path = dir.join(format!(".upload-{}-{attempt}", std::process::id()));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 attempts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_rows_by_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path(), 1 << 20).unwrap();
        let manifest = store.put("notes.txt", b"one\n\ntwo\n").unwrap();
        assert_eq!((manifest.rows, manifest.size), (2, 9));
        assert_eq!(
            store.rows_page(manifest.content_hash, 0, 10).unwrap().rows,
            vec!["one", "two"]
        );
        assert_eq!(store.manifest(manifest.content_hash).unwrap(), manifest);
        // The same rows, differently laid out, are the same content.
        let again = store.put("again.md", b"one\n\n\n\ntwo").unwrap();
        assert_eq!(again.content_hash, manifest.content_hash);
    }

    #[test]
    fn rows_are_read_page_by_page_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path(), 1 << 20).unwrap();
        let text: Vec<String> = (0..10).map(|i| format!("row {i}")).collect();
        let manifest = store.put("a.txt", text.join("\n\n").as_bytes()).unwrap();
        let hash = manifest.content_hash;
        let page = store.rows_page(hash, 3, 4).unwrap();
        assert_eq!((page.total, page.format), (10, Format::Text));
        assert_eq!(page.rows, text[3..7].to_vec());
        assert_eq!(
            store.rows_page(hash, 8, 100).unwrap().rows,
            text[8..].to_vec()
        );
        assert!(store.rows_page(hash, 10, 5).unwrap().rows.is_empty());
        let path = store.path(hash).join("rows.jsonl");
        let tampered = fs::read_to_string(&path).unwrap().replace("row 5", "row X");
        fs::write(&path, tampered).unwrap();
        assert!(store.rows_page(hash, 0, 5).is_ok());
        assert!(matches!(
            store.rows_page(hash, 4, 2),
            Err(ContentError::Corrupt(..))
        ));
        store.remove(hash).unwrap();
        assert!(matches!(
            store.rows_page(hash, 0, 1),
            Err(ContentError::NotFound(_))
        ));
        store.remove(hash).unwrap();
    }

    #[test]
    fn a_file_of_more_rows_than_allowed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path(), 16 << 20).unwrap();
        let tiny = "a\n\n".repeat(crate::MAX_ROWS + 1);
        assert!(matches!(
            store.put("tiny.txt", tiny.as_bytes()),
            Err(ContentError::Rows(RowError::TooManyRows))
        ));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn refused_uploads_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path(), 8).unwrap();
        assert!(matches!(
            store.put("big.txt", b"123456789"),
            Err(ContentError::TooLarge { size: 9, max: 8 })
        ));
        assert!(matches!(
            store.put("x.pdf", b"%PDF"),
            Err(ContentError::UnsupportedType(_))
        ));
        assert!(matches!(
            store.put("x.txt", b"\xff\xfe"),
            Err(ContentError::Rows(RowError::NotUtf8(0)))
        ));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(matches!(
            store.rows_page(B256::repeat_byte(1), 0, 1),
            Err(ContentError::NotFound(_))
        ));
    }

    #[test]
    fn tampered_rows_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path(), 1 << 20).unwrap();
        let manifest = store.put("a.jsonl", b"{\"a\":1}\n{\"b\":2}\n").unwrap();
        let path = store.path(manifest.content_hash).join("rows.jsonl");
        fs::write(&path, "\"{\\\"a\\\":1}\"\n\"{\\\"b\\\":3}\"\n").unwrap();
        assert!(matches!(
            store.rows_page(manifest.content_hash, 0, 2),
            Err(ContentError::Corrupt(..))
        ));
    }
}
