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

    /// The rows of stored content, checked against its hash.
    pub fn rows(&self, hash: B256) -> Result<Vec<String>, ContentError> {
        let file =
            fs::File::open(self.path(hash).join("rows.jsonl")).map_err(|e| not_found(e, hash))?;
        let rows = BufReader::new(file)
            .lines()
            .map(|line| {
                serde_json::from_str::<String>(&line?)
                    .map_err(|e| ContentError::Corrupt(hash, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hashes: Vec<B256> = rows.iter().map(|r| row_hash(r)).collect();
        if content_hash(&hashes) != hash {
            return Err(ContentError::Corrupt(hash, "rows do not match".into()));
        }
        Ok(rows)
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
            store.rows(manifest.content_hash).unwrap(),
            vec!["one", "two"]
        );
        assert_eq!(store.manifest(manifest.content_hash).unwrap(), manifest);
        // The same rows, differently laid out, are the same content.
        let again = store.put("again.md", b"one\n\n\n\ntwo").unwrap();
        assert_eq!(again.content_hash, manifest.content_hash);
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
            store.rows(B256::repeat_byte(1)),
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
            store.rows(manifest.content_hash),
            Err(ContentError::Corrupt(..))
        ));
    }
}
