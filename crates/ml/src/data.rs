//! Training data: rows that keep their contribution ids from file to batch.
//!
//! Attribution needs to know which row shaped which gradient, so a row is never merged with
//! another: each example is one row, and a batch records which rows it holds.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{MlError, Result};
use crate::tokenizer::{encode, end_of_text};

/// One row of training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Unique row id; `file:line` when the file gives none.
    #[serde(default)]
    pub id: String,
    /// The contribution (contributor) the row belongs to; the row id when the file gives none.
    #[serde(default)]
    pub contributor: String,
    /// The text.
    pub text: String,
}

/// Reads rows from JSON Lines files (`.jsonl`: objects with `text` and optionally `id` and
/// `contributor`) or plain text files (any other extension: one row per non-empty line).
pub fn read_rows(paths: &[PathBuf]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| MlError::io(path, e))?;
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            rows.push(parse_row(path, i + 1, line, jsonl)?);
        }
    }
    if rows.is_empty() {
        return Err(MlError::Input("the data files hold no rows".into()));
    }
    Ok(rows)
}

fn parse_row(path: &Path, line_no: usize, line: &str, jsonl: bool) -> Result<Row> {
    let mut row = if jsonl {
        serde_json::from_str::<Row>(line).map_err(|e| {
            MlError::Input(format!(
                "{}:{line_no}: not a row object with a \"text\" field: {e}",
                path.display()
            ))
        })?
    } else {
        Row {
            id: String::new(),
            contributor: String::new(),
            text: line.to_string(),
        }
    };
    if row.id.is_empty() {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        row.id = format!("{stem}:{line_no}");
    }
    if row.contributor.is_empty() {
        row.contributor = row.id.clone();
    }
    Ok(row)
}

/// A tokenized row: `<|endoftext|>` + text + `<|endoftext|>`, cut to the context length.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Index of the row in the dataset it came from.
    pub row: usize,
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// Tokenizes every row, keeping at most `context + 1` tokens of each.
pub fn tokenize(rows: &[Row], tokenizer: &Tokenizer, context: usize) -> Result<Vec<Example>> {
    let eot = end_of_text(tokenizer)
        .ok_or_else(|| MlError::Tokenizer("the tokenizer has no <|endoftext|> token".into()))?;
    rows.iter()
        .enumerate()
        .map(|(row, r)| {
            let mut tokens = vec![eot];
            tokens.extend(encode(tokenizer, &r.text)?);
            tokens.push(eot);
            tokens.truncate(context + 1);
            Ok(Example { row, tokens })
        })
        .collect()
}

/// Splits examples into training and held-out sets; the same seed gives the same split.
/// At least one example is held out when `fraction > 0` and there are two or more.
pub fn split(mut examples: Vec<Example>, fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    examples.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut held = (examples.len() as f64 * fraction).round() as usize;
    if fraction > 0.0 && examples.len() > 1 {
        held = held.clamp(1, examples.len() - 1);
    }
    let eval = examples.split_off(examples.len() - held);
    (examples, eval)
}

/// A padded batch: inputs and next-token targets, a mask of real positions, and the rows.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `batch × seq` token ids.
    pub inputs: Tensor,
    /// `batch × seq` ids of the following tokens.
    pub targets: Tensor,
    /// `batch × seq`, 1.0 where the target is real, 0.0 on padding.
    pub mask: Tensor,
    /// The rows of the batch, in order.
    pub rows: Vec<usize>,
    /// Number of real target tokens.
    pub tokens: usize,
}

impl Batch {
    /// Pads `examples` to the longest among them.
    pub fn new(examples: &[&Example], device: &Device) -> Result<Self> {
        let seq = examples
            .iter()
            .map(|e| e.tokens.len() - 1)
            .max()
            .unwrap_or(0);
        if seq == 0 {
            return Err(MlError::Input(
                "a batch needs at least one example of two or more tokens".into(),
            ));
        }
        let (mut inputs, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for example in examples {
            let n = example.tokens.len() - 1;
            for i in 0..seq {
                let real = i < n;
                inputs.push(if real { example.tokens[i] } else { 0 });
                targets.push(if real { example.tokens[i + 1] } else { 0 });
                mask.push(if real { 1f32 } else { 0.0 });
            }
        }
        let b = examples.len();
        Ok(Self {
            tokens: mask.iter().filter(|&&m| m > 0.0).count(),
            inputs: Tensor::from_vec(inputs, (b, seq), device)?,
            targets: Tensor::from_vec(targets, (b, seq), device)?,
            mask: Tensor::from_vec(mask, (b, seq), device)?,
            rows: examples.iter().map(|e| e.row).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_ids_and_get_defaults_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("c01.jsonl");
        std::fs::write(
            &jsonl,
            "{\"id\":\"r1\",\"contributor\":\"alice\",\"text\":\"a b\"}\n\n{\"text\":\"c d\"}\n",
        )
        .unwrap();
        let txt = dir.path().join("notes.txt");
        std::fs::write(&txt, "first line\nsecond line\n").unwrap();
        let rows = read_rows(&[jsonl.clone(), txt]).unwrap();
        let ids: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.contributor.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("r1", "alice"),
                ("c01:3", "c01:3"),
                ("notes:1", "notes:1"),
                ("notes:2", "notes:2")
            ]
        );

        std::fs::write(&jsonl, "{\"id\":\"r1\"}\n").unwrap();
        let err = read_rows(&[jsonl]).unwrap_err().to_string();
        assert!(
            err.contains("c01.jsonl:1: not a row object with a \"text\" field"),
            "{err}"
        );
        let err = read_rows(&[dir.path().join("absent.jsonl")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.jsonl: No such file"), "{err}");
    }

    #[test]
    fn batches_pad_and_mask_and_remember_their_rows() {
        let examples = [
            Example {
                row: 4,
                tokens: vec![0, 5, 6, 0],
            },
            Example {
                row: 9,
                tokens: vec![0, 7, 0],
            },
        ];
        let batch = Batch::new(&[&examples[0], &examples[1]], &Device::Cpu).unwrap();
        assert_eq!(
            batch.inputs.to_vec2::<u32>().unwrap(),
            [[0, 5, 6], [0, 7, 0]]
        );
        assert_eq!(
            batch.targets.to_vec2::<u32>().unwrap(),
            [[5, 6, 0], [7, 0, 0]]
        );
        assert_eq!(
            batch.mask.to_vec2::<f32>().unwrap(),
            [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
        );
        assert_eq!((batch.rows, batch.tokens), (vec![4, 9], 5));
    }

    #[test]
    fn the_split_is_seeded_and_holds_out_at_least_one() {
        let examples: Vec<Example> = (0..10)
            .map(|row| Example {
                row,
                tokens: vec![0, 1],
            })
            .collect();
        let (train, eval) = split(examples.clone(), 0.01, 3);
        assert_eq!((train.len(), eval.len()), (9, 1));
        assert_eq!(
            split(examples.clone(), 0.3, 3),
            split(examples.clone(), 0.3, 3)
        );
        assert_eq!(split(examples, 0.0, 3).1.len(), 0);
    }
}
