//! Span indexes of any size: the rows split into consecutive shards, each one suffix array of
//! 32-bit positions (at most [`MAX_TOKENS`] tokens), queried together.
//!
//! A span's occurrences and rows are the union of the shards', so a sharded index attributes
//! exactly as one suffix array over all the rows would. On disk an index of one shard is a plain
//! [`SpanIndex`] directory; a larger one holds `shard-0000/`, `shard-0001/`, … and `shards.json`,
//! written last so that a directory without it is an unfinished build.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{AttributionError, Result};
use crate::index::{IndexRow, MAX_TOKENS, RowTokens, SpanIndex};
use crate::span::{Attribution, SpanOptions, attribute};

const SHARDS_FILE: &str = "shards.json";
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct ShardsMeta {
    format: u32,
    tokenizer: String,
    shards: usize,
}

/// A span index over rows of any total size.
pub struct ShardedIndex {
    shards: Vec<SpanIndex>,
}

fn shard_dir(dir: &Path, shard: usize) -> std::path::PathBuf {
    dir.join(format!("shard-{shard:04}"))
}

impl ShardedIndex {
    /// Indexes `rows` in shards of at most `shard_tokens` tokens (separators included; at most
    /// [`MAX_TOKENS`]).
    pub fn build<'a>(
        rows: impl IntoIterator<Item = RowTokens<'a>>,
        tokenizer: &str,
        shard_tokens: usize,
    ) -> Result<Self> {
        if shard_tokens == 0 || shard_tokens > MAX_TOKENS {
            return Err(AttributionError::Input(format!(
                "a shard holds between 1 and {MAX_TOKENS} tokens, not {shard_tokens}"
            )));
        }
        let (mut shards, mut pending, mut size) = (Vec::new(), Vec::new(), 0);
        for row in rows {
            let needed = row.tokens.len() + 1;
            if needed > shard_tokens {
                return Err(AttributionError::Input(format!(
                    "row {} has {} tokens, more than a shard of {shard_tokens} holds",
                    row.row,
                    row.tokens.len()
                )));
            }
            if size + needed > shard_tokens {
                shards.push(SpanIndex::build(pending.drain(..), tokenizer)?);
                size = 0;
            }
            pending.push(row);
            size += needed;
        }
        shards.push(SpanIndex::build(pending, tokenizer)?);
        Ok(Self { shards })
    }

    /// Writes the index into `dir`: a plain span index when it has one shard.
    pub fn save(&self, dir: &Path) -> Result<()> {
        if let [only] = self.shards.as_slice() {
            return only.save(dir);
        }
        for (i, shard) in self.shards.iter().enumerate() {
            shard.save(&shard_dir(dir, i))?;
        }
        let meta = ShardsMeta {
            format: FORMAT,
            tokenizer: self.tokenizer().to_string(),
            shards: self.shards.len(),
        };
        let path = dir.join(SHARDS_FILE);
        let json = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
        std::fs::write(&path, json).map_err(|e| AttributionError::io(&path, e))
    }

    /// Opens an index directory written by [`ShardedIndex::save`] or [`SpanIndex::save`].
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(SHARDS_FILE);
        if !path.exists() {
            return Ok(Self {
                shards: vec![SpanIndex::open(dir)?],
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| AttributionError::io(&path, e))?;
        let meta: ShardsMeta = serde_json::from_slice(&bytes)
            .map_err(|e| AttributionError::corrupt(&path, e.to_string()))?;
        if meta.format != FORMAT || meta.shards == 0 {
            return Err(AttributionError::corrupt(
                &path,
                format!("format {} with {} shards", meta.format, meta.shards),
            ));
        }
        let shards = (0..meta.shards)
            .map(|i| SpanIndex::open(&shard_dir(dir, i)))
            .collect::<Result<Vec<_>>>()?;
        if let Some(other) = shards.iter().find(|s| s.tokenizer() != meta.tokenizer) {
            return Err(AttributionError::corrupt(
                &path,
                format!(
                    "a shard was built with tokenizer {} where the index records {}",
                    other.tokenizer(),
                    meta.tokenizer
                ),
            ));
        }
        Ok(Self { shards })
    }

    /// Attributes `output`, as [`SpanIndex::attribute`] over all the shards' rows.
    pub fn attribute(
        &self,
        output: &[u32],
        tokenizer: &str,
        options: &SpanOptions,
    ) -> Result<Attribution> {
        attribute(&self.shards, &[], output, tokenizer, options)
    }

    /// Attributes `output` as the continuation of `prompt`: spans may begin in the prompt but
    /// must reach into the output (positions in the evidence count from the prompt's start).
    pub fn attribute_continuation(
        &self,
        prompt: &[u32],
        output: &[u32],
        tokenizer: &str,
        options: &SpanOptions,
    ) -> Result<Attribution> {
        attribute(&self.shards, prompt, output, tokenizer, options)
    }

    /// The shards, in row order.
    pub fn shards(&self) -> &[SpanIndex] {
        &self.shards
    }

    /// Fingerprint of the tokenizer the rows were tokenized with.
    pub fn tokenizer(&self) -> &str {
        self.shards[0].tokenizer()
    }

    /// Tokens indexed, separators included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(SpanIndex::len).sum()
    }

    /// Whether the index holds no tokens (never, for a built or opened index).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indexed rows, shard after shard.
    pub fn rows(&self) -> impl Iterator<Item = &IndexRow> {
        self.shards.iter().flat_map(SpanIndex::rows)
    }

    /// Bytes the index takes on disk (or would).
    pub fn size_bytes(&self) -> u64 {
        self.shards.iter().map(SpanIndex::size_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const TOK: &str = "sha256:test";

    /// Rows of 3 to 12 tokens over a vocabulary of 6, so spans repeat across rows and shards.
    fn corpus(seed: u64) -> Vec<(String, String, Vec<u32>)> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..60)
            .map(|i| {
                let len = rng.random_range(3..=12);
                let tokens = (0..len).map(|_| rng.random_range(0..6)).collect();
                (format!("c{}", i % 7), format!("r{i}"), tokens)
            })
            .collect()
    }

    fn rows(corpus: &[(String, String, Vec<u32>)]) -> impl Iterator<Item = RowTokens<'_>> {
        corpus.iter().map(|(c, r, t)| RowTokens {
            contribution: c,
            row: r,
            tokens: t,
        })
    }

    #[test]
    fn shards_attribute_exactly_as_one_suffix_array() {
        let corpus = corpus(5);
        let whole = SpanIndex::build(rows(&corpus), TOK).unwrap();
        let sharded = ShardedIndex::build(rows(&corpus), TOK, 40).unwrap();
        assert!(sharded.shards().len() > 5);
        assert!(sharded.shards().iter().all(|s| s.len() <= 40));
        assert_eq!(sharded.len(), whole.len());
        let options = SpanOptions {
            min_len: 3,
            rows_listed: 100,
            ..SpanOptions::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..50 {
            let output: Vec<u32> = (0..rng.random_range(1..30))
                .map(|_| rng.random_range(0..7))
                .collect();
            assert_eq!(
                sharded.attribute(&output, TOK, &options).unwrap(),
                whole.attribute(&output, TOK, &options).unwrap()
            );
        }
    }

    #[test]
    fn a_continuation_counts_the_spans_that_reach_past_its_prompt() {
        let corpus = [
            ("alice", vec![1, 2, 3, 4, 5, 6]),
            ("bob", vec![20, 21, 22, 23, 24]),
        ]
        .map(|(c, t)| (c.to_string(), format!("{c}-r0"), t));
        let index = ShardedIndex::build(rows(&corpus), TOK, MAX_TOKENS).unwrap();
        let options = SpanOptions {
            min_len: 4,
            ..SpanOptions::default()
        };
        // Bob's span lies in the prompt alone; Alice's begins there and reaches the output.
        let prompt = [20, 21, 22, 23, 9, 1, 2];
        let output = [3, 4, 9];
        let got = index
            .attribute_continuation(&prompt, &output, TOK, &options)
            .unwrap();
        assert_eq!(got.weights.len(), 1);
        assert_eq!(
            (got.weights[0].contribution.as_str(), got.weights[0].ppm),
            ("alice", 1_000_000)
        );
        assert_eq!((got.spans[0].start, got.spans[0].len), (5, 4));
        // Alone, the output is shorter than any span that counts.
        assert!(
            !index
                .attribute(&output, TOK, &options)
                .unwrap()
                .is_attributed()
        );
    }

    #[test]
    fn a_sharded_index_reopens_identically_and_damage_is_reported() {
        let corpus = corpus(6);
        let dir = tempfile::tempdir().unwrap();
        let sharded = ShardedIndex::build(rows(&corpus), TOK, 100).unwrap();
        sharded.save(dir.path()).unwrap();
        let back = ShardedIndex::open(dir.path()).unwrap();
        assert_eq!(back.shards().len(), sharded.shards().len());
        assert!(back.rows().eq(sharded.rows()));
        let output = &corpus[10].2;
        let options = SpanOptions {
            min_len: 3,
            ..SpanOptions::default()
        };
        assert_eq!(
            back.attribute(output, TOK, &options).unwrap(),
            sharded.attribute(output, TOK, &options).unwrap()
        );

        std::fs::remove_dir_all(shard_dir(dir.path(), 1)).unwrap();
        let err = ShardedIndex::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("shard-0001"), "{err}");
        std::fs::write(dir.path().join(SHARDS_FILE), b"{").unwrap();
        let err = ShardedIndex::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("corrupt index"), "{err}");
    }

    #[test]
    fn one_shard_is_a_plain_index_and_oversized_rows_are_refused() {
        let corpus = corpus(7);
        let dir = tempfile::tempdir().unwrap();
        ShardedIndex::build(rows(&corpus), TOK, MAX_TOKENS)
            .unwrap()
            .save(dir.path())
            .unwrap();
        assert!(!dir.path().join(SHARDS_FILE).exists());
        assert_eq!(SpanIndex::open(dir.path()).unwrap().rows().len(), 60);
        let err = ShardedIndex::build(rows(&corpus), TOK, 8)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("more than a shard of 8 holds"), "{err}");
        assert!(ShardedIndex::build(rows(&corpus), TOK, 0).is_err());
    }
}
