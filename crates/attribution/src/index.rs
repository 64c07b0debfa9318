//! The span index of a datanet version: its rows' token ids, a suffix array over them, and which
//! row each position belongs to.
//!
//! On disk an index is a directory: `tokens.bin` (the rows' token ids, each row followed by a
//! separator, little-endian u16 when the vocabulary allows, else u32), `suffixes.bin` (the suffix
//! array, little-endian u32 positions), `rows.json` (each row's contribution, row id and first
//! position) and `index.json` (format, sizes and the tokenizer's fingerprint), written last so that
//! a directory without it is an unfinished build. The two binary files are memory-mapped on open,
//! so opening costs the same for any size; 6 bytes per token with a vocabulary below 65,535.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytemuck::Pod;
use libsais::SuffixArrayConstruction;
use libsais::typestate::{OwnedBuffer, SingleThreaded};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AttributionError, Result};

const FORMAT: u32 = 1;
const META_FILE: &str = "index.json";
const TOKENS_FILE: &str = "tokens.bin";
const SUFFIXES_FILE: &str = "suffixes.bin";
const ROWS_FILE: &str = "rows.json";

/// Largest index one suffix array of 32-bit positions holds; bigger datanets are split into shards.
pub const MAX_TOKENS: usize = i32::MAX as usize;

/// A short, stable fingerprint of a tokenizer's `tokenizer.json`, recorded in the index so that a
/// query tokenized differently is refused rather than silently matched against the wrong ids.
pub fn fingerprint(tokenizer_json: &[u8]) -> String {
    let digest = Sha256::digest(tokenizer_json);
    format!("sha256:{}", hex::encode(&digest[..8]))
}

/// One indexed row: whose it is and where its tokens start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRow {
    /// The contribution (contributor) the row belongs to; attribution weights are per contribution.
    pub contribution: String,
    /// The row's id, shown as evidence.
    pub row: String,
    /// Position of the row's first token in the concatenated text.
    pub start: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    tokenizer: String,
    tokens: u64,
    token_bytes: u8,
    rows: u64,
}

/// Elements owned in memory (a fresh build) or mapped from a file (an opened index).
enum Words<T> {
    Owned(Vec<T>),
    Mapped(Mmap),
}

impl<T: Pod> Words<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            // Alignment and length were checked when the file was opened.
            Self::Mapped(m) => bytemuck::cast_slice(m),
        }
    }

    fn map(path: &Path, count: u64) -> Result<Self> {
        let file = File::open(path).map_err(|e| AttributionError::io(path, e))?;
        let expected = count * std::mem::size_of::<T>() as u64;
        let found = file
            .metadata()
            .map_err(|e| AttributionError::io(path, e))?
            .len();
        if found != expected {
            return Err(AttributionError::corrupt(
                path,
                format!("{found} bytes where the index records {expected}"),
            ));
        }
        if count == 0 {
            return Ok(Self::Owned(Vec::new()));
        }
        // SAFETY: the file belongs to the index and is only read; an index is never rewritten in
        // place (a rebuild writes a new directory), so the mapping does not change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| AttributionError::io(path, e))?;
        bytemuck::try_cast_slice::<u8, T>(&map)
            .map_err(|e| AttributionError::corrupt(path, format!("unaligned mapping: {e}")))?;
        Ok(Self::Mapped(map))
    }
}

/// Token ids with the narrowest width the vocabulary allows.
enum Tokens {
    U16(Words<u16>),
    U32(Words<u32>),
}

impl Tokens {
    fn get(&self, pos: usize) -> Option<u32> {
        match self {
            Self::U16(w) => w.as_slice().get(pos).map(|&t| t as u32),
            Self::U32(w) => w.as_slice().get(pos).copied(),
        }
    }

    /// The separator after each row: above every token id, so no match crosses it.
    fn separator(&self) -> u32 {
        match self {
            Self::U16(_) => u16::MAX as u32,
            Self::U32(_) => u32::MAX,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::U16(w) => bytemuck::cast_slice(w.as_slice()),
            Self::U32(w) => bytemuck::cast_slice(w.as_slice()),
        }
    }
}

/// A row to index: its contribution, its id and its token ids.
#[derive(Clone, Copy, Debug)]
pub struct RowTokens<'a> {
    /// The contribution the row belongs to.
    pub contribution: &'a str,
    /// The row's id.
    pub row: &'a str,
    /// The row's token ids.
    pub tokens: &'a [u32],
}

/// A suffix-array index over the token ids of a set of rows.
pub struct SpanIndex {
    meta: Meta,
    tokens: Tokens,
    suffixes: Words<u32>,
    rows: Vec<IndexRow>,
    source: PathBuf,
}

impl SpanIndex {
    /// Indexes `rows`, tokenized by the tokenizer whose [`fingerprint`] is `tokenizer`.
    pub fn build<'a>(
        rows: impl IntoIterator<Item = RowTokens<'a>>,
        tokenizer: &str,
    ) -> Result<Self> {
        let (text, table, separator) = concatenate(rows)?;
        let (tokens, suffixes) = if separator == u16::MAX as u32 {
            let text: Vec<u16> = text.iter().map(|&t| t as u16).collect();
            let suffixes = suffix_array_u16(&text)?;
            (Tokens::U16(Words::Owned(text)), suffixes)
        } else {
            let suffixes = suffix_array_u32(&text, separator)?;
            (Tokens::U32(Words::Owned(text)), suffixes)
        };
        Ok(Self {
            meta: Meta {
                format: FORMAT,
                tokenizer: tokenizer.to_string(),
                tokens: suffixes.len() as u64,
                token_bytes: if matches!(tokens, Tokens::U16(_)) {
                    2
                } else {
                    4
                },
                rows: table.len() as u64,
            },
            tokens,
            suffixes: Words::Owned(suffixes),
            rows: table,
            source: PathBuf::from("(in memory)"),
        })
    }

    /// Writes the index into the directory `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| AttributionError::io(dir, e))?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| AttributionError::io(&path, e))
        };
        write(TOKENS_FILE, self.tokens.bytes())?;
        write(
            SUFFIXES_FILE,
            bytemuck::cast_slice(self.suffixes.as_slice()),
        )?;
        write(ROWS_FILE, &to_json(&self.rows))?;
        write(META_FILE, &to_json(&self.meta))
    }

    /// Opens an index directory written by [`SpanIndex::save`], mapping its arrays.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        let meta: Meta = read_json(&meta_path)?;
        if meta.format != FORMAT {
            return Err(AttributionError::corrupt(
                &meta_path,
                format!("format {} where this version reads {FORMAT}", meta.format),
            ));
        }
        let tokens_path = dir.join(TOKENS_FILE);
        let tokens = match meta.token_bytes {
            2 => Tokens::U16(Words::map(&tokens_path, meta.tokens)?),
            4 => Tokens::U32(Words::map(&tokens_path, meta.tokens)?),
            other => {
                return Err(AttributionError::corrupt(
                    &meta_path,
                    format!("tokens of {other} bytes"),
                ));
            }
        };
        let suffixes = Words::map(&dir.join(SUFFIXES_FILE), meta.tokens)?;
        let rows_path = dir.join(ROWS_FILE);
        let rows: Vec<IndexRow> = read_json(&rows_path)?;
        check_rows(&rows, &meta, &rows_path)?;
        Ok(Self {
            meta,
            tokens,
            suffixes,
            rows,
            source: dir.to_path_buf(),
        })
    }

    /// Fingerprint of the tokenizer the rows were tokenized with.
    pub fn tokenizer(&self) -> &str {
        &self.meta.tokenizer
    }

    /// Tokens indexed, separators included.
    pub fn len(&self) -> usize {
        self.meta.tokens as usize
    }

    /// Whether the index holds no tokens (never, for a built or opened index).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indexed rows, in position order.
    pub fn rows(&self) -> &[IndexRow] {
        &self.rows
    }

    /// Bytes the index takes on disk (or would).
    pub fn size_bytes(&self) -> u64 {
        self.meta.tokens * (self.meta.token_bytes as u64 + 4)
    }

    /// The separator token value, above every id a query may match.
    pub(crate) fn separator(&self) -> u32 {
        self.tokens.separator()
    }

    /// The token `offset` places into the suffix of rank `rank`, `None` past the end.
    pub(crate) fn token_after(&self, rank: usize, offset: usize) -> Result<Option<u32>> {
        let start = self.suffix(rank)?;
        Ok(self.tokens.get(start + offset))
    }

    /// The text position of the suffix of rank `rank`.
    pub(crate) fn suffix(&self, rank: usize) -> Result<usize> {
        match self.suffixes.as_slice().get(rank) {
            Some(&pos) if (pos as usize) < self.len() => Ok(pos as usize),
            _ => Err(self.corrupt(SUFFIXES_FILE, format!("no valid suffix at rank {rank}"))),
        }
    }

    /// Index of the row that holds text position `pos`.
    pub(crate) fn row_at(&self, pos: usize) -> usize {
        self.rows.partition_point(|r| r.start as usize <= pos) - 1
    }

    fn corrupt(&self, file: &str, reason: String) -> AttributionError {
        AttributionError::corrupt(&self.source.join(file), reason)
    }
}

/// Concatenates the rows' tokens, each row followed by the separator, and records where each
/// starts; returns the separator, `u16::MAX` when every id fits below it, else `u32::MAX`.
fn concatenate<'a>(
    rows: impl IntoIterator<Item = RowTokens<'a>>,
) -> Result<(Vec<u32>, Vec<IndexRow>, u32)> {
    let (mut text, mut table) = (Vec::new(), Vec::new());
    for row in rows {
        if let Some(bad) = row.tokens.iter().find(|&&t| t >= u32::MAX - 1) {
            return Err(AttributionError::Input(format!(
                "row {}: token id {bad} is reserved for separators",
                row.row
            )));
        }
        table.push(IndexRow {
            contribution: row.contribution.to_string(),
            row: row.row.to_string(),
            start: text.len() as u64,
        });
        text.extend_from_slice(row.tokens);
        text.push(u32::MAX);
        if text.len() > MAX_TOKENS {
            return Err(AttributionError::Input(format!(
                "more than {MAX_TOKENS} tokens: build a ShardedIndex"
            )));
        }
    }
    if table.is_empty() {
        return Err(AttributionError::Input("no rows to index".into()));
    }
    let max = text.iter().copied().filter(|&t| t != u32::MAX).max();
    let separator = match max {
        Some(m) if m >= u16::MAX as u32 => u32::MAX,
        _ => u16::MAX as u32,
    };
    for t in text.iter_mut().filter(|t| **t == u32::MAX) {
        *t = separator;
    }
    Ok((text, table, separator))
}

fn sais_error(e: impl std::fmt::Debug) -> AttributionError {
    AttributionError::Input(format!("suffix array construction failed: {e:?}"))
}

/// Runs a suffix sort set up for 32-bit positions on one thread, the text's element type chosen
/// by the caller (libsais has a kernel per width).
fn sort_suffixes<I: libsais::InputElement>(
    sort: SuffixArrayConstruction<'static, 'static, '_, I, i32, OwnedBuffer, SingleThreaded>,
) -> Result<Vec<u32>> {
    let suffixes = sort.run().map_err(sais_error)?.into_vec();
    Ok(suffixes.into_iter().map(|p| p as u32).collect())
}

fn suffix_array_u16(text: &[u16]) -> Result<Vec<u32>> {
    sort_suffixes(
        SuffixArrayConstruction::for_text(text)
            .in_owned_buffer32()
            .single_threaded(),
    )
}

/// Large vocabularies: libsais sorts i32 symbols below an alphabet size, the separator largest.
fn suffix_array_u32(text: &[u32], separator: u32) -> Result<Vec<u32>> {
    let largest_token = text.iter().copied().filter(|&t| t != separator).max();
    let top = largest_token.map_or(0, |t| t as i64 + 1);
    if top >= i32::MAX as i64 {
        return Err(AttributionError::Input(format!(
            "token ids up to {top} do not fit a 32-bit suffix sort"
        )));
    }
    let mut symbols: Vec<i32> = text
        .iter()
        .map(|&t| if t == separator { top as i32 } else { t as i32 })
        .collect();
    sort_suffixes(
        SuffixArrayConstruction::for_text_mut(&mut symbols)
            .in_owned_buffer32()
            .single_threaded(),
    )
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("index metadata serializes")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| AttributionError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| AttributionError::corrupt(path, e.to_string()))
}

fn check_rows(rows: &[IndexRow], meta: &Meta, path: &Path) -> Result<()> {
    if rows.len() as u64 != meta.rows || rows.is_empty() {
        return Err(AttributionError::corrupt(
            path,
            format!("{} rows where the index records {}", rows.len(), meta.rows),
        ));
    }
    let ordered = rows[0].start == 0
        && rows.windows(2).all(|w| w[0].start < w[1].start)
        && rows.last().is_some_and(|r| r.start < meta.tokens);
    if !ordered {
        return Err(AttributionError::corrupt(
            path,
            "row starts are not increasing positions inside the index",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SpanOptions;

    fn build(big_ids: bool) -> SpanIndex {
        let shift = if big_ids { 100_000 } else { 0 };
        let rows: Vec<(String, Vec<u32>)> = (0..5u32)
            .map(|r| {
                (
                    format!("r{r}"),
                    (0..20).map(|i| shift + (i * (r + 1)) % 17).collect(),
                )
            })
            .collect();
        SpanIndex::build(
            rows.iter().map(|(id, tokens)| RowTokens {
                contribution: if id == "r0" { "alice" } else { "bob" },
                row: id,
                tokens,
            }),
            "sha256:t",
        )
        .unwrap()
    }

    #[test]
    fn a_saved_index_opens_mapped_and_answers_the_same() {
        for big_ids in [false, true] {
            let built = build(big_ids);
            let dir = tempfile::tempdir().unwrap();
            built.save(dir.path()).unwrap();
            let opened = SpanIndex::open(dir.path()).unwrap();
            assert!(matches!(opened.suffixes, Words::Mapped(_)));
            assert_eq!(opened.rows(), built.rows());
            assert_eq!(opened.size_bytes(), if big_ids { 8 } else { 6 } * 105);
            let shift = if big_ids { 100_000 } else { 0 };
            let query: Vec<u32> = (0..20).map(|i| shift + i % 17).collect();
            let options = SpanOptions::default();
            let (a, b) = (
                built.attribute(&query, "sha256:t", &options).unwrap(),
                opened.attribute(&query, "sha256:t", &options).unwrap(),
            );
            assert_eq!(a, b);
            assert_eq!(a.weights[0].contribution, "alice");
        }
    }

    #[test]
    fn building_twice_writes_identical_files() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        build(false).save(one.path()).unwrap();
        build(false).save(two.path()).unwrap();
        for name in [META_FILE, TOKENS_FILE, SUFFIXES_FILE, ROWS_FILE] {
            let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(name)).unwrap();
            assert_eq!(read(&one), read(&two), "{name}");
        }
    }

    #[test]
    fn damaged_indexes_fail_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        build(false).save(dir.path()).unwrap();
        let path = |name: &str| dir.path().join(name);
        let original = std::fs::read(path(SUFFIXES_FILE)).unwrap();

        std::fs::write(path(SUFFIXES_FILE), &original[..original.len() - 3]).unwrap();
        let err = SpanIndex::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("suffixes.bin: corrupt index: 417 bytes"),
            "{err}"
        );

        // Positions past the end are found when a query reaches them, as an error.
        std::fs::write(path(SUFFIXES_FILE), vec![0xff; original.len()]).unwrap();
        let index = SpanIndex::open(dir.path()).unwrap();
        let err = index.attribute(&[1, 2, 3], "sha256:t", &SpanOptions::default());
        assert!(err.unwrap_err().to_string().contains("no valid suffix"));
        std::fs::write(path(SUFFIXES_FILE), &original).unwrap();

        std::fs::write(path(ROWS_FILE), b"[{\"contribution\": 3").unwrap();
        let err = SpanIndex::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("rows.json: corrupt index"), "{err}");

        std::fs::remove_file(path(META_FILE)).unwrap();
        let err = SpanIndex::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("index.json: No such file"), "{err}");
    }

    #[test]
    fn nothing_to_index_and_reserved_ids_are_refused() {
        let none = SpanIndex::build(std::iter::empty(), "t").err().unwrap();
        assert!(none.to_string().contains("no rows"));
        let reserved = [u32::MAX];
        let row = RowTokens {
            contribution: "c",
            row: "r",
            tokens: &reserved,
        };
        let err = SpanIndex::build([row], "t").err().unwrap();
        assert!(err.to_string().contains("reserved for separators"));
    }
}
