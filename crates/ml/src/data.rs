//! Training data: rows that keep their contribution ids from file to batch.
//!
//! Attribution needs to know which row shaped which gradient, so a row is never merged with
//! another: each example is one row, and a batch records which rows it holds.
//!
//! A row is plain text, or a conversation in one of the forms LLaMA-Factory takes: alpaca
//! (`instruction`, optional `input`, `output`), OpenAI-style `messages` (`role`, `content`) or
//! ShareGPT `conversations` (`from`, `value`). A conversation is written in the base model's chat
//! template, and the loss covers the assistant's turns only.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::chat::{ChatFormat, Message};
use crate::error::{MlError, Result};
use crate::tokenizer::{encode, end_of_text};

/// One row of training data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Unique row id; `file:line` when the file gives none.
    #[serde(default)]
    pub id: String,
    /// The contribution (contributor) the row belongs to; the row id when the file gives none.
    #[serde(default)]
    pub contributor: String,
    /// The text; when a conversation gives none, as a datanet reads it (`openledger_content`'s
    /// `row_text`): an alpaca row's parts joined by blank lines, other conversations one
    /// `role: content` line a message.
    pub text: String,
    /// A conversation's messages; none for plain text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Turn>,
}

/// One message of a conversation row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

impl Turn {
    fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    fn message(&self) -> Message<'_> {
        Message {
            role: &self.role,
            content: &self.content,
        }
    }
}

impl Row {
    /// A row from a JSON record: `text`, and the conversation of an alpaca, `messages` or
    /// ShareGPT record.
    pub fn from_record(record: &serde_json::Value) -> std::result::Result<Self, String> {
        let object = record.as_object().ok_or("a row must be a JSON object")?;
        let field = |name: &str| match object.get(name) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let messages = conversation(object)?;
        let text = match (field("text"), messages.is_empty()) {
            (Some(text), _) => text,
            (None, false) if object.contains_key("instruction") => {
                let parts = [field("instruction"), field("input"), field("output")];
                let parts: Vec<String> = parts
                    .into_iter()
                    .flatten()
                    .filter(|p| !p.is_empty())
                    .collect();
                parts.join("\n\n")
            }
            (None, false) => messages
                .iter()
                .map(|m| format!("{}: {}", m.role, m.content))
                .collect::<Vec<_>>()
                .join("\n"),
            (None, true) => {
                return Err("a row needs \"text\", \"instruction\" and \"output\", \
                            \"messages\" or \"conversations\""
                    .into());
            }
        };
        Ok(Self {
            id: field("id").unwrap_or_default(),
            contributor: field("contributor").unwrap_or_default(),
            text,
            messages,
        })
    }
}

/// The conversation of an alpaca, `messages` or ShareGPT record (none for plain text), checked:
/// known roles, and at least one assistant turn, after something it answers.
fn conversation(
    object: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<Vec<Turn>, String> {
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("every message needs a string \"{key}\""))
    };
    let turns = if let Some(instruction) = object.get("instruction") {
        let instruction = instruction
            .as_str()
            .ok_or("\"instruction\" must be a string")?;
        let output = object
            .get("output")
            .and_then(|o| o.as_str())
            .ok_or("an alpaca row needs a string \"output\"")?;
        let input = object.get("input").and_then(|i| i.as_str()).unwrap_or("");
        let user = if input.is_empty() {
            instruction.to_string()
        } else {
            format!("{instruction}\n\n{input}")
        };
        vec![Turn::new("user", &user), Turn::new("assistant", output)]
    } else if let Some(messages) = object.get("messages") {
        let messages = messages.as_array().ok_or("\"messages\" must be an array")?;
        messages
            .iter()
            .map(|m| Ok(Turn::new(&text(m, "role")?, &text(m, "content")?)))
            .collect::<std::result::Result<_, String>>()?
    } else if let Some(turns) = object.get("conversations") {
        let turns = turns
            .as_array()
            .ok_or("\"conversations\" must be an array")?;
        turns
            .iter()
            .map(|m| {
                let role = match text(m, "from")?.as_str() {
                    "human" | "user" => "user",
                    "gpt" | "assistant" => "assistant",
                    "system" => "system",
                    other => return Err(format!("unknown ShareGPT speaker {other:?}")),
                };
                Ok(Turn::new(role, &text(m, "value")?))
            })
            .collect::<std::result::Result<_, String>>()?
    } else {
        return Ok(Vec::new());
    };
    if let Some(bad) = turns
        .iter()
        .find(|t| !matches!(t.role.as_str(), "system" | "user" | "assistant"))
    {
        return Err(format!("unknown role {:?}", bad.role));
    }
    match turns.iter().position(|t| t.role == "assistant") {
        None => Err("a conversation needs an assistant turn to train on".into()),
        Some(0) => Err("a conversation cannot open with the assistant's turn".into()),
        Some(_) => Ok(turns),
    }
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
        serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| e.to_string())
            .and_then(|record| Row::from_record(&record))
            .map_err(|e| MlError::Input(format!("{}:{line_no}: {e}", path.display())))?
    } else {
        Row {
            text: line.to_string(),
            ..Row::default()
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

/// A tokenized row, cut to the context length: `<|endoftext|>` + text + `<|endoftext|>`, or
/// `<|endoftext|>` + the conversation in the chat template.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Index of the row in the dataset it came from.
    pub row: usize,
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Per token, whether the model learns to predict it: all of plain text, the assistant's
    /// turns of a conversation.
    pub trained: Vec<bool>,
}

impl Example {
    /// An example trained on all its tokens.
    pub fn plain(row: usize, tokens: Vec<u32>) -> Self {
        let trained = vec![true; tokens.len()];
        Self {
            row,
            tokens,
            trained,
        }
    }
}

/// Tokenizes every row, keeping at most `context + 1` tokens of each; conversations are written
/// in `chat`.
pub fn tokenize(
    rows: &[Row],
    tokenizer: &Tokenizer,
    chat: &ChatFormat,
    context: usize,
) -> Result<Vec<Example>> {
    let eot = end_of_text(tokenizer)
        .ok_or_else(|| MlError::Tokenizer("the tokenizer has no <|endoftext|> token".into()))?;
    rows.iter()
        .enumerate()
        .map(|(row, r)| {
            let mut example = if r.messages.is_empty() {
                let mut tokens = vec![eot];
                tokens.extend(encode(tokenizer, &r.text)?);
                tokens.push(eot);
                Example::plain(row, tokens)
            } else {
                conversation_example(row, r, tokenizer, chat, eot)?
            };
            example.tokens.truncate(context + 1);
            example.trained.truncate(context + 1);
            if !example.trained[1..].contains(&true) {
                return Err(MlError::Input(format!(
                    "row {}: its prompt fills the context of {context} tokens, leaving no answer \
                     to train on",
                    r.id
                )));
            }
            Ok(example)
        })
        .collect()
}

/// A conversation in the chat template, each assistant turn (its text and the template's end of
/// turn) trained and the rest not: the template written up to a turn's prompt, and then with
/// the turn, tells the two apart.
fn conversation_example(
    row: usize,
    r: &Row,
    tokenizer: &Tokenizer,
    chat: &ChatFormat,
    eot: u32,
) -> Result<Example> {
    let messages: Vec<Message<'_>> = r.messages.iter().map(Turn::message).collect();
    let mut example = Example::plain(row, vec![eot]);
    example.trained[0] = false;
    let mut written = String::new();
    let mut push = |text: &str, trained: bool| -> Result<()> {
        let tokens = encode(tokenizer, text)?;
        example
            .trained
            .extend(std::iter::repeat_n(trained, tokens.len()));
        example.tokens.extend(tokens);
        Ok(())
    };
    for (i, _) in messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == "assistant")
    {
        let prompt = chat.render(&messages[..i], true)?;
        let turn = chat.render(&messages[..=i], false)?;
        let (Some(before), Some(answer)) = (
            prompt.strip_prefix(written.as_str()),
            turn.strip_prefix(prompt.as_str()),
        ) else {
            return Err(MlError::Input(format!(
                "row {}: the chat template does not write each assistant turn after its prompt",
                r.id
            )));
        };
        push(before, false)?;
        push(answer, true)?;
        written = turn;
    }
    Ok(example)
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
    /// `batch × seq`, 1.0 where the target is trained, 0.0 on padding and prompts.
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
                let trained = real && example.trained[i + 1];
                mask.push(if trained { 1f32 } else { 0.0 });
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
        assert!(err.contains("c01.jsonl:1: a row needs \"text\""), "{err}");
        let err = read_rows(&[dir.path().join("absent.jsonl")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.jsonl: No such file"), "{err}");
    }

    fn record(json: &str) -> std::result::Result<Row, String> {
        Row::from_record(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn conversations_in_every_form_train_on_the_answers_only() {
        let rows = [
            r#"{"instruction": "Name a colour.", "input": "", "output": "Red."}"#,
            r#"{"messages": [{"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Red."}]}"#,
            r#"{"conversations": [{"from": "human", "value": "Name a colour."},
                {"from": "gpt", "value": "Red."}], "id": 7}"#,
        ]
        .map(|r| record(r).unwrap());
        assert!(rows.iter().all(|r| r.messages == rows[0].messages));
        assert_eq!(rows[0].text, "Name a colour.\n\nRed.");
        assert_eq!(rows[1].text, "user: Name a colour.\nassistant: Red.");
        assert_eq!(rows[2].id, "7");
        let texts = ["Q: Name a colour. A: Red.", "Q: Name a shape. A: Round."];
        let tokenizer = crate::tokenizer::train(texts.into_iter(), 300).unwrap();
        let examples = tokenize(&rows, &tokenizer, &ChatFormat::QuestionAnswer, 64).unwrap();
        let part = |e: &Example, trained: bool| {
            let ids: Vec<u32> = e
                .tokens
                .iter()
                .zip(&e.trained)
                .filter(|(_, t)| **t == trained)
                .map(|(id, _)| *id)
                .collect();
            crate::tokenizer::decode(&tokenizer, &ids).unwrap()
        };
        for e in &examples {
            assert_eq!(part(e, true), " Red.\n");
            assert_eq!(part(e, false), "Q: Name a colour. A:");
        }
        let batch = Batch::new(&[&examples[0]], &Device::Cpu).unwrap();
        let trained = examples[0].trained.iter().skip(1).filter(|t| **t).count();
        assert_eq!(batch.tokens, trained);
        let prompt_only =
            tokenize(&rows[..1], &tokenizer, &ChatFormat::QuestionAnswer, 4).unwrap_err();
        assert!(
            prompt_only
                .to_string()
                .contains("leaving no answer to train on"),
            "{prompt_only}"
        );
    }

    #[test]
    fn bad_conversations_are_refused_by_what_is_wrong() {
        for (json, wanted) in [
            (r#"{"id": 1}"#, "a row needs \"text\""),
            (r#"{"instruction": "x"}"#, "needs a string \"output\""),
            (
                r#"{"messages": [{"role": "user", "content": "x"}]}"#,
                "needs an assistant turn",
            ),
            (
                r#"{"messages": [{"role": "assistant", "content": "x"}]}"#,
                "cannot open with",
            ),
            (
                r#"{"messages": [{"role": "tool", "content": "x"}]}"#,
                "unknown role \"tool\"",
            ),
            (
                r#"{"messages": [{"role": "user"}]}"#,
                "needs a string \"content\"",
            ),
            (
                r#"{"conversations": [{"from": "bot", "value": "x"}]}"#,
                "unknown ShareGPT speaker",
            ),
            (r#"[1, 2]"#, "must be a JSON object"),
        ] {
            let err = record(json).unwrap_err();
            assert!(err.contains(wanted), "{json}: {err}");
        }
    }

    #[test]
    fn batches_pad_and_mask_and_remember_their_rows() {
        let examples = [
            Example::plain(4, vec![0, 5, 6, 0]),
            Example::plain(9, vec![0, 7, 0]),
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
        let examples: Vec<Example> = (0..10).map(|row| Example::plain(row, vec![0, 1])).collect();
        let (train, eval) = split(examples.clone(), 0.01, 3);
        assert_eq!((train.len(), eval.len()), (9, 1));
        assert_eq!(
            split(examples.clone(), 0.3, 3),
            split(examples.clone(), 0.3, 3)
        );
        assert_eq!(split(examples, 0.0, 3).1.len(), 0);
    }
}
