//! `openledger attribution`: span attribution (`index`, `query`) on data files and a tokenizer,
//! and gradient influence (`influence`) on an adapter, from the command line with no node needed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_attribution::index::MAX_TOKENS;
use openledger_attribution::{Attribution, Credit, ShardedIndex, SpanOptions};
use openledger_flywheel::index::{BuiltIndex, TOKENIZER_FILE, build_index, read_tokenizer};
use openledger_ml::tokenizer;

use crate::factory::base_or_dev;

pub mod eval;
pub mod influence;

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
        /// Most tokens in one suffix array; bigger data is split into shards queried together.
        #[arg(long, default_value_t = MAX_TOKENS)]
        shard_tokens: usize,
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
    /// Measure attribution quality on generated data with a known ground truth.
    Eval(eval::EvalArgs),
    /// Attribute a text to an adapter's training rows by gradient influence (DataInf, with
    /// TracIn beside it).
    Influence {
        /// Base model: a checkpoint directory, a GGUF file, or a model `model get` installed [default: the dev base model]
        #[arg(long)]
        base: Option<PathBuf>,
        /// The adapter directory, with the influence.bin that `openledger train` wrote.
        #[arg(long)]
        adapter: PathBuf,
        /// The output text to attribute.
        #[arg(long)]
        text: String,
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
            shard_tokens,
        } => index(&data, &tokenizer, &out, shard_tokens),
        AttributionCommand::Query {
            index,
            text,
            tokenizer,
            min_len,
            json,
        } => query(&index, &text, tokenizer.as_deref(), min_len, json),
        AttributionCommand::Influence {
            base,
            adapter,
            text,
            json,
        } => influence::query(&base_or_dev(base.as_deref())?, &adapter, &text, json),
        AttributionCommand::Eval(args) => eval::run(args),
    }
}

fn index(
    files: &[PathBuf],
    tokenizer_path: &Path,
    out: &Path,
    shard_tokens: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let BuiltIndex { index, .. } = build_index(files, tokenizer_path, shard_tokens)?;
    index.save(out)?;
    std::fs::copy(tokenizer_path, out.join(TOKENIZER_FILE))
        .with_context(|| format!("copy the tokenizer into {}", out.display()))?;
    println!(
        "indexed {} rows, {} tokens ({:.1} MB, {} shard{}) into {} in {:.2} s",
        index.rows().count(),
        index.len(),
        index.size_bytes() as f64 / 1e6,
        index.shards().len(),
        if index.shards().len() == 1 { "" } else { "s" },
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
    let index = ShardedIndex::open(dir)?;
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

/// Prints weights a line per contribution: ppm, percent, id.
pub(crate) fn print_weights(weights: &[Credit]) {
    for credit in weights {
        println!(
            "{:>9} ppm  {:>6.2}%  {}",
            credit.ppm,
            credit.ppm as f64 / 1e4,
            credit.contribution
        );
    }
}

fn print_attribution(
    attribution: &Attribution,
    tok: &tokenizer::Tokenizer,
    output: &[u32],
) -> anyhow::Result<()> {
    if !attribution.is_attributed() {
        println!("no attribution: no span of the text occurs in the indexed rows");
    }
    print_weights(&attribution.weights);
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
