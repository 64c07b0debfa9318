//! `openledger attribution eval`: attribution quality measured on generated data whose ground
//! truth is known.
//!
//! It writes a corpus of N contributors (the last one noisy: its facts are scrambled), then
//! - span: attributes each clean contributor's facts (those its rows state), verbatim as a model reproducing them would
//!   emit them, and counts how often the top contribution is the fact's owner; attributes the
//!   facts of a second corpus the index never saw and counts how often anything is credited;
//! - gradient: fine-tunes a LoRA adapter on all rows, records their gradients, ranks rows by
//!   self-influence and reports the AUROC of finding the noisy contributor's rows; then retrains
//!   on random halves of the contributors and reports the linear datamodeling score (LDS): the
//!   Spearman correlation, over the halves, between the influence a half is predicted to have on
//!   a fact and the fact's actual loss, averaged over facts. BM25 and random scores are the
//!   baselines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use openledger_attribution::quality::{Bm25, auroc, spearman};
use openledger_attribution::{Credit, GradientRow, RowScores, SpanOptions};
use openledger_ml::chat::ChatFormat;
use openledger_ml::checkpoint::{TOKENIZER_FILE, load_model};
use openledger_ml::data::{Row, read_rows, tokenize};
use openledger_ml::factory::{DataOptions, FineTune};
use openledger_ml::lora::{Adapter, LoraConfig};
use openledger_ml::synth::{Manifest, SynthOptions, generate};
use openledger_ml::train::{TrainOptions, evaluate};
use openledger_ml::{Device, tokenizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::factory::base_or_dev;
use openledger_attribution::index::MAX_TOKENS;
use openledger_flywheel::influence::InfluenceModel;

use openledger_flywheel::index::{BuiltIndex, build_index};

/// Options of `openledger attribution eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Base model: a checkpoint directory, a GGUF file, or a model `model get` installed [default: the dev base model]
    #[arg(long)]
    base: Option<PathBuf>,
    /// Domain of the generated corpus.
    #[arg(long, default_value = "medical")]
    domain: String,
    /// Contributors, the last of them noisy.
    #[arg(long, default_value_t = 8)]
    contributors: usize,
    /// Rows per contributor.
    #[arg(long, default_value_t = 60)]
    rows: usize,
    /// Retrainings on random halves of the contributors for the LDS; 0 skips it.
    #[arg(long, default_value_t = 8)]
    subsets: usize,
    /// Passes over the rows in each fine-tuning.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Peak learning rate of each fine-tuning.
    #[arg(long, default_value_t = 5e-3)]
    lr: f64,
    /// Longest example in tokens.
    #[arg(long, default_value_t = 128)]
    context: usize,
    /// Projections the adapters adapt (facts live in the MLP more than in attention).
    #[arg(long, default_value = "q,k,v,o,gate,up,down")]
    targets: String,
    /// Shortest span that counts in span attribution, in tokens.
    #[arg(long, default_value_t = SpanOptions::default().min_len)]
    min_len: usize,
    /// Buckets per LoRA module of the sketched gradients.
    #[arg(long, default_value_t = openledger_flywheel::influence::DEFAULT_DIMS)]
    influence_dims: usize,
    /// Seed of the corpus, the training and the subsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Span attribution's quality.
#[derive(Debug, Serialize)]
struct SpanQuality {
    /// Facts attributed.
    facts: usize,
    /// Share whose top contribution is the fact's owner.
    top1_accuracy: f64,
    /// Novel sentences attributed.
    novel: usize,
    /// Share of them credited to anyone.
    false_attribution_rate: f64,
    /// Mean query time, milliseconds.
    query_ms: f64,
}

/// The linear datamodeling score of one method.
#[derive(Debug, Serialize)]
struct Lds {
    datainf: f64,
    tracin: f64,
    bm25: f64,
    random: f64,
}

/// Gradient influence's quality.
#[derive(Debug, Serialize)]
struct GradientQuality {
    /// Training rows with stored gradients.
    rows: usize,
    /// Bytes stored per training row.
    bytes_per_row: usize,
    /// AUROC of the noisy contributor's rows by DataInf self-influence.
    noisy_auroc_datainf: f64,
    /// The same by TracIn self-influence (gradient norm).
    noisy_auroc_tracin: f64,
    /// Share of facts whose top contribution by DataInf is the owner.
    top1_accuracy_datainf: f64,
    /// The same by TracIn.
    top1_accuracy_tracin: f64,
    /// Mean influence query time (gradient and scoring), milliseconds.
    query_ms: f64,
    /// The LDS over `subsets` retrainings; absent with `--subsets 0`.
    lds: Option<Lds>,
    subsets: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    domain: String,
    contributors: usize,
    rows_per_contributor: usize,
    noisy_contributor: String,
    span: SpanQuality,
    gradient: GradientQuality,
    seconds: f64,
}

/// A fact and the contributor that stated it.
struct Query {
    text: String,
    owner: String,
}

/// Runs `openledger attribution eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        args.contributors >= 2,
        "--contributors must be at least 2: one clean and one noisy"
    );
    let base = base_or_dev(args.base.as_deref())?;
    let work = tempfile::tempdir().context("cannot create a scratch directory")?;
    let manifest = corpus(&args, args.seed, work.path())?;
    let files: Vec<PathBuf> = manifest
        .contributors
        .iter()
        .map(|c| work.path().join("data").join(&c.file))
        .collect();
    let noisy = manifest
        .contributors
        .last()
        .expect("two or more")
        .id
        .clone();
    // A fact no row happened to state cannot have been learned from anyone.
    let rows = read_rows(&files)?;
    let queries: Vec<Query> = manifest
        .contributors
        .iter()
        .filter(|c| !c.noise)
        .flat_map(|c| {
            c.facts.iter().map(|f| Query {
                text: f.text.clone(),
                owner: c.id.clone(),
            })
        })
        .filter(|q| {
            rows.iter()
                .any(|r| r.contributor == q.owner && r.text.contains(&q.text))
        })
        .collect();
    anyhow::ensure!(
        !queries.is_empty(),
        "no clean contributor's rows state one of its facts; generate more --rows"
    );
    let novel = corpus(&args, args.seed ^ 0x5EED, &work.path().join("novel"))?;
    let novel: Vec<String> = novel
        .contributors
        .iter()
        .flat_map(|c| c.facts.iter().map(|f| f.text.clone()))
        .collect();
    let options = SpanOptions {
        min_len: args.min_len,
        ..SpanOptions::default()
    };
    let span = span_quality(&base, &files, &queries, &novel, &options)?;
    let gradient = gradient_quality(&args, &base, &files, &queries, &noisy, work.path())?;
    let report = Report {
        domain: args.domain.clone(),
        contributors: args.contributors,
        rows_per_contributor: args.rows,
        noisy_contributor: noisy,
        span,
        gradient,
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn corpus(args: &EvalArgs, seed: u64, dir: &Path) -> anyhow::Result<Manifest> {
    let options = SynthOptions {
        domain: args.domain.clone(),
        contributors: args.contributors,
        rows: args.rows,
        seed,
        noise_contributor: Some(args.contributors - 1),
    };
    Ok(generate(&options, &dir.join("data"))?)
}

fn span_quality(
    base: &Path,
    files: &[PathBuf],
    queries: &[Query],
    novel: &[String],
    options: &SpanOptions,
) -> anyhow::Result<SpanQuality> {
    let BuiltIndex {
        index,
        tokenizer: tok,
        fingerprint: print,
    } = build_index(files, &base.join(TOKENIZER_FILE), MAX_TOKENS)?;
    let started = Instant::now();
    let mut correct = 0;
    for q in queries {
        let attribution = index.attribute(&tokenizer::encode(&tok, &q.text)?, &print, options)?;
        correct += usize::from(
            attribution
                .weights
                .first()
                .is_some_and(|c| c.contribution == q.owner),
        );
    }
    let mut credited = 0;
    for text in novel {
        let attribution = index.attribute(&tokenizer::encode(&tok, text)?, &print, options)?;
        credited += usize::from(attribution.is_attributed());
    }
    Ok(SpanQuality {
        facts: queries.len(),
        top1_accuracy: correct as f64 / queries.len() as f64,
        novel: novel.len(),
        false_attribution_rate: credited as f64 / novel.len() as f64,
        query_ms: started.elapsed().as_secs_f64() * 1e3 / (queries.len() + novel.len()) as f64,
    })
}

/// A fine-tuning of the eval on `files`, into `out`, with no rows held out.
fn fine_tune(
    args: &EvalArgs,
    base: &Path,
    files: Vec<PathBuf>,
    out: PathBuf,
) -> anyhow::Result<FineTune> {
    Ok(FineTune {
        base: base.to_path_buf(),
        data: DataOptions {
            files,
            eval_split: 0.0,
            context: args.context,
        },
        out,
        lora: LoraConfig::new(8, 16.0, &args.targets)?,
        train: TrainOptions {
            lr: args.lr,
            epochs: args.epochs,
            seed: args.seed,
            ..TrainOptions::default()
        },
        qlora: false,
    })
}

fn gradient_quality(
    args: &EvalArgs,
    base: &Path,
    files: &[PathBuf],
    queries: &[Query],
    noisy: &str,
    work: &Path,
) -> anyhow::Result<GradientQuality> {
    let job = fine_tune(args, base, files.to_vec(), work.join("full"))?;
    job.run(&mut openledger_ml::train::unwatched)?;
    openledger_flywheel::influence::record(&job, args.influence_dims, true)?;
    let model = InfluenceModel::open(base, &job.out)?;
    let store = model.store();
    let is_noisy: Vec<bool> = store
        .rows()
        .iter()
        .map(|r| r.contribution == noisy)
        .collect();
    let self_influence = store.self_influence();
    let started = Instant::now();
    let mut scores = Vec::with_capacity(queries.len());
    let (mut top_datainf, mut top_tracin) = (0, 0);
    for q in queries {
        let projected = model.project(&q.text)?;
        let influence = store.score(&projected)?;
        let top = |w: &[Credit]| usize::from(w.first().is_some_and(|c| c.contribution == q.owner));
        top_datainf += top(&influence.weights);
        top_tracin += top(&influence.tracin_weights);
        scores.push(store.row_scores(&projected)?);
    }
    let query_ms = started.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    let lds = (args.subsets > 0)
        .then(|| lds(args, base, files, queries, &model, &scores, work))
        .transpose()?;
    let n = queries.len() as f64;
    Ok(GradientQuality {
        rows: store.rows().len(),
        bytes_per_row: store.bytes_per_row(),
        noisy_auroc_datainf: auroc(&self_influence.datainf, &is_noisy).unwrap_or(f64::NAN),
        noisy_auroc_tracin: auroc(&self_influence.tracin, &is_noisy).unwrap_or(f64::NAN),
        top1_accuracy_datainf: top_datainf as f64 / n,
        top1_accuracy_tracin: top_tracin as f64 / n,
        query_ms,
        lds,
        subsets: args.subsets,
    })
}

/// Retrains on random halves of the contributors and correlates, per fact, each method's
/// predicted influence of a half (the sum of its rows' scores) with the fact's loss after
/// training on it (lower loss is more influence).
fn lds(
    args: &EvalArgs,
    base: &Path,
    files: &[PathBuf],
    queries: &[Query],
    model: &InfluenceModel,
    scores: &[RowScores],
    work: &Path,
) -> anyhow::Result<Lds> {
    let rows = model.store().rows();
    let contributors: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().expect("a file name").to_string_lossy().into())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let tok = tokenizer::load(&base.join(TOKENIZER_FILE))?;
    let bm25 = bm25_scores(&tok, files, rows, queries)?;
    let random: Vec<Vec<f64>> = queries
        .iter()
        .map(|_| rows.iter().map(|_| rng.random::<f64>()).collect())
        .collect();
    // Per method and query: predicted influence and actual (negated) loss of every subset.
    let mut predicted = vec![vec![Vec::new(); queries.len()]; 4];
    let mut actual = vec![Vec::new(); queries.len()];
    for subset in 0..args.subsets {
        let mut chosen: Vec<bool> = vec![false; contributors.len()];
        for i in rand::seq::index::sample(&mut rng, contributors.len(), contributors.len() / 2) {
            chosen[i] = true;
        }
        let half: Vec<PathBuf> = (0..files.len())
            .filter(|&i| chosen[i])
            .map(|i| files[i].clone())
            .collect();
        let job = fine_tune(args, base, half, work.join(format!("half{subset}")))?;
        job.run(&mut openledger_ml::train::unwatched)?;
        let losses = query_losses(base, &job.out, &tok, queries)?;
        let included: Vec<bool> = rows
            .iter()
            .map(|r| {
                contributors
                    .iter()
                    .zip(&chosen)
                    .any(|(c, &k)| k && *c == r.contribution)
            })
            .collect();
        let sum = |s: &[f64]| -> f64 {
            s.iter()
                .zip(&included)
                .filter(|(_, k)| **k)
                .map(|(s, _)| s)
                .sum()
        };
        for (q, loss) in losses.into_iter().enumerate() {
            actual[q].push(-loss);
            predicted[0][q].push(sum(&scores[q].datainf));
            predicted[1][q].push(sum(&scores[q].tracin));
            predicted[2][q].push(sum(&bm25[q]));
            predicted[3][q].push(sum(&random[q]));
        }
    }
    let mean_spearman = |method: &Vec<Vec<f64>>| -> f64 {
        let values: Vec<f64> = method
            .iter()
            .zip(&actual)
            .filter_map(|(p, a)| spearman(p, a))
            .collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    Ok(Lds {
        datainf: mean_spearman(&predicted[0]),
        tracin: mean_spearman(&predicted[1]),
        bm25: mean_spearman(&predicted[2]),
        random: mean_spearman(&predicted[3]),
    })
}

/// BM25 of every stored row for every query.
fn bm25_scores(
    tok: &tokenizer::Tokenizer,
    files: &[PathBuf],
    rows: &[GradientRow],
    queries: &[Query],
) -> anyhow::Result<Vec<Vec<f64>>> {
    let by_id: std::collections::HashMap<String, Row> = read_rows(files)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let tokens: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| tokenizer::encode(tok, &by_id[&r.row].text))
        .collect::<Result<_, _>>()?;
    let bm25 = Bm25::new(tokens.iter().map(Vec::as_slice));
    queries
        .iter()
        .map(|q| Ok(bm25.scores(&tokenizer::encode(tok, &q.text)?)))
        .collect()
}

/// Each query's mean next-token loss under the base with `adapter` installed.
fn query_losses(
    base: &Path,
    adapter: &Path,
    tok: &tokenizer::Tokenizer,
    queries: &[Query],
) -> anyhow::Result<Vec<f64>> {
    let mut model = load_model(base, &Device::Cpu)?;
    Adapter::load(adapter, model.config(), &Device::Cpu)?.apply(&mut model)?;
    let rows: Vec<Row> = queries
        .iter()
        .map(|q| Row {
            text: q.text.clone(),
            ..Row::default()
        })
        .collect();
    let context = model.config().max_position_embeddings - 1;
    tokenize(&rows, tok, &ChatFormat::of_checkpoint(base)?, context)?
        .iter()
        .map(|e| Ok(evaluate(&model, std::slice::from_ref(e), 1)?.loss))
        .collect()
}

fn print_report(r: &Report) {
    println!(
        "attribution quality on {} contributors x {} rows of {} data ({} noisy), {:.0} s",
        r.contributors, r.rows_per_contributor, r.domain, r.noisy_contributor, r.seconds
    );
    let s = &r.span;
    println!(
        "span:     top-1 {:.3} on {} facts (target >= 0.95); false attribution {:.3} on {} novel \
         sentences (target <= 0.05); {:.2} ms a query",
        s.top1_accuracy, s.facts, s.false_attribution_rate, s.novel, s.query_ms
    );
    let g = &r.gradient;
    println!(
        "gradient: noisy-row AUROC {:.3} DataInf, {:.3} TracIn (target >= 0.90); top-1 {:.3} \
         DataInf, {:.3} TracIn; {:.0} ms a query; {} bytes per row",
        g.noisy_auroc_datainf,
        g.noisy_auroc_tracin,
        g.top1_accuracy_datainf,
        g.top1_accuracy_tracin,
        g.query_ms,
        g.bytes_per_row
    );
    if let Some(lds) = &g.lds {
        println!(
            "LDS over {} halves: DataInf {:.3}, TracIn {:.3}, BM25 {:.3}, random {:.3}",
            g.subsets, lds.datainf, lds.tracin, lds.bm25, lds.random
        );
    }
}
