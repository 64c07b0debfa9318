//! Span indexes of datanet versions: built from rows with the model's tokenizer, kept on disk
//! per version, and queried by the ledger and by attribution challenges.

use std::path::{Path, PathBuf};

use anyhow::Context;
use openledger_attribution::{RowTokens, ShardedIndex, fingerprint};
use openledger_ml::{data, tokenizer};

pub mod registry;

/// The copy of the tokenizer kept in an index directory, so queries tokenize as the rows were.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The tokenizer at `path`, with its fingerprint.
pub fn read_tokenizer(path: &Path) -> anyhow::Result<(tokenizer::Tokenizer, String)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    Ok((tokenizer::load(path)?, fingerprint(&bytes)))
}

/// A span index over the rows of data files, with the tokenizer it was built with and that
/// tokenizer's fingerprint.
pub struct BuiltIndex {
    /// The index.
    pub index: ShardedIndex,
    /// The tokenizer its rows were encoded with.
    pub tokenizer: tokenizer::Tokenizer,
    /// That tokenizer's fingerprint.
    pub fingerprint: String,
}

/// A span index over the rows of data `files`.
pub fn build_index(
    files: &[PathBuf],
    tokenizer_path: &Path,
    shard_tokens: usize,
) -> anyhow::Result<BuiltIndex> {
    index_rows(&data::read_rows(files)?, tokenizer_path, shard_tokens)
}

/// A span index over `rows`, tokenized by the tokenizer at `tokenizer_path`.
pub fn index_rows(
    rows: &[data::Row],
    tokenizer_path: &Path,
    shard_tokens: usize,
) -> anyhow::Result<BuiltIndex> {
    let (tok, print) = read_tokenizer(tokenizer_path)?;
    let tokens: Vec<Vec<u32>> = rows
        .iter()
        .map(|row| tokenizer::encode(&tok, &row.text))
        .collect::<Result<_, _>>()?;
    let index = ShardedIndex::build(
        rows.iter().zip(&tokens).map(|(row, tokens)| RowTokens {
            contribution: &row.contributor,
            row: &row.id,
            tokens,
        }),
        &print,
        shard_tokens,
    )?;
    Ok(BuiltIndex {
        index,
        tokenizer: tok,
        fingerprint: print,
    })
}
