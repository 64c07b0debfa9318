//! `openledger attribution index` and `openledger attribution query`: span attribution from the
//! command line, on data files and a tokenizer, with no node needed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_attribution::{Attribution, RowTokens, SpanIndex, SpanOptions, fingerprint};
use openledger_ml::{data, tokenizer};

/// The copy of the tokenizer kept in an index directory, so queries tokenize as the rows were.
const TOKENIZER_FILE: &str = "tokenizer.json";

/// Options of `openledger attribution`.
#[derive(Debug, Args)]
pub struct AttributionArgs {
    #[command(subcommand)]
    command: AttributionCommand,
}

#[derive(Debug, Subcommand)]
enum AttributionCommand {
    /// Build a span index (suffix array) over the rows of data files.
    Index {
        /// Data files (JSONL rows with id, contributor, text; or plain text, a row per line).
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// The tokenizer.json the model uses.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Output index directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Attribute a text to the contributions whose rows contain its spans.
    Query {
        /// Index directory.
        #[arg(long)]
        index: PathBuf,
        /// The output text to attribute.
        #[arg(long)]
        text: String,
        /// Tokenize with this tokenizer.json instead of the index's copy (it must be the same).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Shortest span that counts, in tokens.
        #[arg(long, default_value_t = SpanOptions::default().min_len)]
        min_len: usize,
        /// Print the attribution as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `openledger attribution`.
pub fn run(args: AttributionArgs) -> anyhow::Result<()> {
    match args.command {
        AttributionCommand::Index {
            data,
            tokenizer,
            out,
        } => index(&data, &tokenizer, &out),
        AttributionCommand::Query {
            index,
            text,
            tokenizer,
            min_len,
            json,
        } => query(&index, &text, tokenizer.as_deref(), min_len, json),
    }
}

fn read_tokenizer(path: &Path) -> anyhow::Result<(tokenizer::Tokenizer, String)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    Ok((tokenizer::load(path)?, fingerprint(&bytes)))
}

fn index(files: &[PathBuf], tokenizer_path: &Path, out: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let (tok, print) = read_tokenizer(tokenizer_path)?;
    let rows = data::read_rows(files)?;
    let tokens: Vec<Vec<u32>> = rows
        .iter()
        .map(|row| tokenizer::encode(&tok, &row.text))
        .collect::<Result<_, _>>()?;
    let index = SpanIndex::build(
        rows.iter().zip(&tokens).map(|(row, tokens)| RowTokens {
            contribution: &row.contributor,
            row: &row.id,
            tokens,
        }),
        &print,
    )?;
    index.save(out)?;
    std::fs::copy(tokenizer_path, out.join(TOKENIZER_FILE))
        .with_context(|| format!("copy the tokenizer into {}", out.display()))?;
    println!(
        "indexed {} rows, {} tokens ({:.1} MB) into {} in {:.2} s",
        rows.len(),
        index.len(),
        index.size_bytes() as f64 / 1e6,
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn query(
    dir: &Path,
    text: &str,
    tokenizer_path: Option<&Path>,
    min_len: usize,
    json: bool,
) -> anyhow::Result<()> {
    let index = SpanIndex::open(dir)?;
    let (tok, print) = read_tokenizer(
        &tokenizer_path.map_or_else(|| dir.join(TOKENIZER_FILE), Path::to_path_buf),
    )?;
    let output = tokenizer::encode(&tok, text)?;
    let options = SpanOptions {
        min_len,
        ..Default::default()
    };
    let attribution = index.attribute(&output, &print, &options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&attribution)?);
    } else {
        print_attribution(&attribution, &tok, &output)?;
    }
    Ok(())
}

fn print_attribution(
    attribution: &Attribution,
    tok: &tokenizer::Tokenizer,
    output: &[u32],
) -> anyhow::Result<()> {
    if !attribution.is_attributed() {
        println!("no attribution: no span of the text occurs in the indexed rows");
    }
    for credit in &attribution.weights {
        println!(
            "{:>9} ppm  {:>6.2}%  {}",
            credit.ppm,
            credit.ppm as f64 / 1e4,
            credit.contribution
        );
    }
    for span in &attribution.spans {
        let text = tokenizer::decode(tok, &output[span.start..span.start + span.len])?;
        let rows: Vec<String> = span
            .listed
            .iter()
            .map(|r| format!("{}/{}", r.contribution, r.row))
            .collect();
        let note = if span.counted {
            ""
        } else {
            " (too common, not counted)"
        };
        println!(
            "  span {}..{} {:?}: {} rows{note}: {}",
            span.start,
            span.start + span.len,
            text,
            span.rows,
            rows.join(", ")
        );
    }
    Ok(())
}
