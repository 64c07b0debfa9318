//! Splitting text files into rows and hashing them.

use alloy_primitives::{B256, keccak256};

/// The text formats a datanet accepts, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `.txt`: one row per paragraph (blocks separated by blank lines).
    Text,
    /// `.md`: as text.
    Markdown,
    /// `.jsonl`: one row per non-empty line, each a JSON value.
    Jsonl,
    /// `.csv`: one row per record after the header, written back as a CSV line.
    Csv,
}

impl Format {
    /// The format of a file name, by its extension (case-insensitive).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let (_, ext) = name.rsplit_once('.')?;
        match ext.to_ascii_lowercase().as_str() {
            "txt" => Some(Self::Text),
            "md" | "markdown" => Some(Self::Markdown),
            "jsonl" => Some(Self::Jsonl),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// Why a file cannot be split into rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The file is not UTF-8 text.
    #[error("the file is not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
    /// The file has no rows.
    #[error("the file has no rows")]
    Empty,
    /// A JSONL line is not JSON.
    #[error("line {line} is not valid JSON: {message}")]
    BadJson {
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// The CSV is malformed.
    #[error("invalid CSV: {0}")]
    BadCsv(String),
    /// More rows than one file may hold.
    #[error("the file has more than {MAX_ROWS} rows: split it into several files")]
    TooManyRows,
}

/// Most rows one file may hold. Every row costs a hash in the manifest, an entry in the span index
/// and a line to page through, whatever its length: a file of tiny rows must not cost a thousand
/// times its size.
pub const MAX_ROWS: usize = 100_000;

/// Splits a file's bytes into rows.
pub fn rows(format: Format, bytes: &[u8]) -> Result<Vec<String>, RowError> {
    let text = std::str::from_utf8(bytes).map_err(|e| RowError::NotUtf8(e.valid_up_to()))?;
    let rows = match format {
        Format::Text | Format::Markdown => paragraphs(text),
        Format::Jsonl => json_lines(text)?,
        Format::Csv => csv_records(text)?,
    };
    if rows.is_empty() {
        return Err(RowError::Empty);
    }
    if rows.len() > MAX_ROWS {
        return Err(RowError::TooManyRows);
    }
    Ok(rows)
}

fn paragraphs(text: &str) -> Vec<String> {
    let mut rows = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !current.is_empty() {
                rows.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line.trim_end());
        }
    }
    rows
}

fn json_lines(text: &str) -> Result<Vec<String>, RowError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<serde_json::Value>(line)
                .map(|_| line.trim().to_string())
                .map_err(|e| RowError::BadJson {
                    line: i + 1,
                    message: e.to_string(),
                })
        })
        .collect()
}

fn csv_records(text: &str) -> Result<Vec<String>, RowError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let bad = |e: csv::Error| RowError::BadCsv(e.to_string());
    reader.headers().map_err(bad)?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(bad)?;
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        writer.write_record(&record).map_err(bad)?;
        let line = writer
            .into_inner()
            .map_err(|e| RowError::BadCsv(e.to_string()))?;
        let line = String::from_utf8(line).expect("CSV of UTF-8 fields is UTF-8");
        rows.push(line.trim_end_matches('\n').to_string());
    }
    Ok(rows)
}

/// The text of a stored row, as training, indexing and attribution read it: the one rule for what
/// a row says, whatever its format. A JSONL row that is an object with a string `text` field is
/// that field; an instruction record (`instruction`, optional `input`, `output`, as in Alpaca) is
/// its parts joined by blank lines; a chat record (`messages` of `{role, content}`, or ShareGPT's
/// `conversations` of `{from, value}`, `human` read as `user` and `gpt` as `assistant`) is its
/// messages, one `role: content` line each; a JSON string is that string. Any other row (a
/// paragraph, a CSV record, other JSON) is its text as stored.
pub fn row_text(format: Format, row: &str) -> String {
    if format != Format::Jsonl {
        return row.to_string();
    }
    match serde_json::from_str::<serde_json::Value>(row) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(serde_json::Value::Object(record)) => {
            record_text(&record).unwrap_or_else(|| row.to_string())
        }
        _ => row.to_string(),
    }
}

fn record_text(record: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let field = |name: &str| record.get(name).and_then(|v| v.as_str());
    if let Some(text) = field("text") {
        return Some(text.to_string());
    }
    if let (Some(instruction), Some(output)) = (field("instruction"), field("output")) {
        let parts = [
            Some(instruction),
            field("input").filter(|i| !i.is_empty()),
            Some(output),
        ];
        return Some(parts.into_iter().flatten().collect::<Vec<_>>().join("\n\n"));
    }
    let (messages, role, content) = match record.get("messages") {
        Some(messages) => (messages, "role", "content"),
        None => (record.get("conversations")?, "from", "value"),
    };
    let lines: Option<Vec<String>> = messages
        .as_array()?
        .iter()
        .map(|m| {
            let role = match m.get(role)?.as_str()? {
                "human" => "user",
                "gpt" => "assistant",
                other => other,
            };
            Some(format!("{role}: {}", m.get(content)?.as_str()?))
        })
        .collect();
    lines.filter(|l| !l.is_empty()).map(|l| l.join("\n"))
}

/// A row's hash: `keccak256(0x00 . row)` (the prefix keeps leaves apart from inner nodes).
pub fn row_hash(row: &str) -> B256 {
    let mut preimage = Vec::with_capacity(row.len() + 1);
    preimage.push(0u8);
    preimage.extend_from_slice(row.as_bytes());
    keccak256(preimage)
}

/// The Merkle root of row hashes, in order: pairs are hashed as `keccak256(0x01 . left .
/// right)` level by level, and an odd last node moves up unchanged. One row's root is its hash.
pub fn content_hash(row_hashes: &[B256]) -> B256 {
    let mut level = row_hashes.to_vec();
    if level.is_empty() {
        return B256::ZERO;
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => {
                    let mut preimage = [0u8; 65];
                    preimage[0] = 1;
                    preimage[1..33].copy_from_slice(left.as_slice());
                    preimage[33..].copy_from_slice(right.as_slice());
                    keccak256(preimage)
                }
                [single] => *single,
                _ => unreachable!("chunks(2)"),
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rows_text_is_read_by_one_rule() {
        let jsonl = |row: &str| row_text(Format::Jsonl, row);
        assert_eq!(
            jsonl(r#"{"id": 1, "text": "Aspirin thins blood."}"#),
            "Aspirin thins blood."
        );
        assert_eq!(
            jsonl(
                r#"{"instruction": "Name a fever drug.", "input": "", "output": "Paracetamol."}"#
            ),
            "Name a fever drug.\n\nParacetamol."
        );
        assert_eq!(
            jsonl(
                r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#
            ),
            "user: Hi\nassistant: Hello"
        );
        assert_eq!(
            jsonl(
                r#"{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}"#
            ),
            "user: Hi\nassistant: Hello"
        );
        assert_eq!(jsonl(r#""just a string""#), "just a string");
        assert_eq!(
            jsonl(r#"{"q": "other", "a": "shape"}"#),
            r#"{"q": "other", "a": "shape"}"#
        );
        // Only JSONL rows are read as JSON: a paragraph that looks like JSON is a paragraph.
        assert_eq!(
            row_text(Format::Text, r#"{"text": "x"}"#),
            r#"{"text": "x"}"#
        );
        assert_eq!(row_text(Format::Csv, "a,b"), "a,b");
    }

    #[test]
    fn text_splits_into_paragraphs() {
        let text = "First paragraph\nstill first.  \n\n\n  \nSecond.\r\n\r\nThird\n";
        assert_eq!(
            rows(Format::Text, text.as_bytes()).unwrap(),
            vec!["First paragraph\nstill first.", "Second.", "Third"]
        );
    }

    #[test]
    fn jsonl_keeps_each_valid_line() {
        let text = "{\"q\": 1}\n\n[2, 3]\n";
        assert_eq!(
            rows(Format::Jsonl, text.as_bytes()).unwrap(),
            vec!["{\"q\": 1}", "[2, 3]"]
        );
        let err = rows(Format::Jsonl, b"{\"q\": 1}\n{broken\n").unwrap_err();
        assert!(matches!(err, RowError::BadJson { line: 2, .. }), "{err}");
    }

    #[test]
    fn csv_rows_are_records_after_the_header() {
        let text = "question,answer\n\"What is 2+2?\",4\n\"multi\nline\",\"a, b\"\n";
        assert_eq!(
            rows(Format::Csv, text.as_bytes()).unwrap(),
            vec!["What is 2+2?,4", "\"multi\nline\",\"a, b\""]
        );
        assert!(matches!(
            rows(Format::Csv, b"a,b\n1,2,3\n"),
            Err(RowError::BadCsv(_))
        ));
    }

    #[test]
    fn bad_files_are_refused() {
        assert_eq!(rows(Format::Text, b"ok\xff"), Err(RowError::NotUtf8(2)));
        assert_eq!(rows(Format::Text, b" \n\n "), Err(RowError::Empty));
        assert_eq!(rows(Format::Csv, b"only,header\n"), Err(RowError::Empty));
        assert_eq!(Format::from_file_name("notes.PDF"), None);
        assert_eq!(Format::from_file_name("a.b.JSONL"), Some(Format::Jsonl));
    }

    #[test]
    fn the_root_commits_to_rows_and_their_order() {
        let hashes: Vec<B256> = ["a", "b", "c"].iter().map(|r| row_hash(r)).collect();
        let root = content_hash(&hashes);
        assert_eq!(content_hash(&hashes[..1]), hashes[0]);
        let mut swapped = hashes.clone();
        swapped.swap(0, 1);
        assert_ne!(content_hash(&swapped), root);
        // Three leaves: (a, b) pair up, c moves up, then the two are paired.
        let node = |l: B256, r: B256| keccak256([&[1u8][..], l.as_slice(), r.as_slice()].concat());
        assert_eq!(root, node(node(hashes[0], hashes[1]), hashes[2]));
    }
}
