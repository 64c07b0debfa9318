//! ModelFactory jobs: pre-train a base model from scratch, or fine-tune LoRA adapters on it.
//!
//! A job reads its rows, trains, evaluates held-out loss before and after, and writes everything a
//! user or the chain needs into its output directory: the weights (a Hugging Face checkpoint or a
//! PEFT adapter), `metrics.json`, `loss_curve.svg` and `rows.json`, which maps every row used to
//! its contribution and split.

use std::path::{Path, PathBuf};

use candle_core::{Device, Var};
use serde::{Deserialize, Serialize};

use crate::chat::ChatFormat;
use crate::checkpoint::{
    TOKENIZER_FILE, load_model, make_trainable, random_weights, save_checkpoint,
};
use crate::config::ModelConfig;
use crate::data::{Example, Row, read_rows, split, tokenize};
use crate::error::{MlError, Result};
use crate::gguf::load_quantized;
use crate::llama::Llama;
use crate::lora::{Adapter, LoraConfig};
use crate::plot::loss_curve_svg;
use crate::quant::QLORA_DTYPE;
use crate::tokenizer;
use crate::train::{
    Evaluation, OnStep, RunStats, TrainOptions, evaluate, peak_memory_bytes, train,
};

/// The metrics file of a job.
pub const METRICS_FILE: &str = "metrics.json";
/// The loss-curve image of a job.
pub const LOSS_CURVE_FILE: &str = "loss_curve.svg";
/// The rows of a job with their contributions and split.
pub const ROWS_FILE: &str = "rows.json";

/// Data settings shared by both jobs.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// JSONL or text files of rows.
    pub files: Vec<PathBuf>,
    /// Fraction of rows held out for evaluation.
    pub eval_split: f64,
    /// Longest example in tokens; longer rows are cut.
    pub context: usize,
}

/// A LoRA fine-tuning job.
#[derive(Debug, Clone)]
pub struct FineTune {
    /// The base checkpoint directory.
    pub base: PathBuf,
    /// The data.
    pub data: DataOptions,
    /// Where the adapter and metrics go.
    pub out: PathBuf,
    /// Rank, alpha and targets.
    pub lora: LoraConfig,
    /// Optimiser settings.
    pub train: TrainOptions,
    /// QLoRA: train over the base kept quantized (a GGUF base's own blocks, a dense base's
    /// projections in [`QLORA_DTYPE`]'s), not over its f32 weights.
    pub qlora: bool,
}

/// A pre-training job: tokenizer and base model from scratch.
#[derive(Debug, Clone)]
pub struct Pretrain {
    /// The model's shape; its vocabulary size is the tokenizer's.
    pub config: ModelConfig,
    /// Largest vocabulary the tokenizer may learn.
    pub vocab_size: usize,
    /// The data.
    pub data: DataOptions,
    /// Where the checkpoint goes.
    pub out: PathBuf,
    /// Optimiser settings.
    pub train: TrainOptions,
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// `lora`, `qlora` or `pretrain`.
    pub kind: String,
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows held out.
    pub eval_rows: usize,
    /// Parameters updated.
    pub trainable_parameters: usize,
    /// Parameters of the model, adapter included.
    pub total_parameters: usize,
    /// The settings used.
    pub options: TrainOptions,
    /// Held-out loss before training.
    pub eval_before: Option<Evaluation>,
    /// Held-out loss after training.
    pub eval_after: Option<Evaluation>,
    /// Steps, tokens, speed and the per-step curve.
    pub run: RunStats,
    /// Peak resident memory of the process, bytes.
    pub peak_memory_bytes: Option<u64>,
}

#[derive(Serialize)]
struct RowRecord<'a> {
    id: &'a str,
    contributor: &'a str,
    split: &'static str,
}

impl FineTune {
    /// Runs the job, calling `progress` after every step.
    pub fn run(&self, progress: &mut OnStep<'_>) -> Result<Metrics> {
        let device = Device::Cpu;
        let (mut model, kind) = if self.qlora {
            (load_quantized(&self.base, Some(QLORA_DTYPE))?, "qlora")
        } else {
            (load_model(&self.base, &device)?, "lora")
        };
        let (rows, train_set, eval_set) = self.examples(model.config())?;
        let mut adapter =
            Adapter::init(model.config(), self.lora.clone(), self.train.seed, &device)?;
        let vars = adapter.make_trainable()?;
        // B starts at zero, so the adapted model's "before" loss is the base model's, bit for bit.
        adapter.apply(&mut model)?;
        let sets = Sets {
            rows: &rows,
            train: &train_set,
            eval: &eval_set,
        };
        let mut train = self.train.clone();
        // QLoRA is the mode that saves memory: its activations are not kept whole either.
        train.gradient_checkpointing |= self.qlora;
        let mut metrics = train_and_evaluate(kind, &model, vars, &sets, &train, progress)?;
        metrics.trainable_parameters = adapter.parameter_count();
        metrics.total_parameters += adapter.parameter_count();
        adapter.save(&self.out, &self.base.to_string_lossy())?;
        write_outputs(&self.out, &metrics, &sets)?;
        Ok(metrics)
    }

    /// The job's rows and the examples it trains on (the held-out ones left out), as
    /// [`FineTune::run`] splits them, for a model of configuration `config`.
    pub fn training_set(&self, config: &ModelConfig) -> Result<(Vec<Row>, Vec<Example>)> {
        let (rows, train_set, _) = self.examples(config)?;
        Ok((rows, train_set))
    }

    /// The job's rows, and its examples split into the trained and the held-out ones.
    fn examples(&self, config: &ModelConfig) -> Result<(Vec<Row>, Vec<Example>, Vec<Example>)> {
        let tokenizer = tokenizer::load(&self.base.join(TOKENIZER_FILE))?;
        let chat = ChatFormat::of_checkpoint(&self.base)?;
        let rows = read_rows(&self.data.files)?;
        let data = (&tokenizer, &chat);
        let (train_set, eval_set) = prepare(&rows, data, &self.data, self.train.seed, config)?;
        Ok((rows, train_set, eval_set))
    }
}

impl Pretrain {
    /// Runs the job, calling `progress` after every step.
    pub fn run(&self, progress: &mut OnStep<'_>) -> Result<Metrics> {
        let device = Device::Cpu;
        let rows = read_rows(&self.data.files)?;
        let tokenizer = tokenizer::train(rows.iter().map(|r| r.text.as_str()), self.vocab_size)?;
        let mut config = self.config.clone();
        config.vocab_size = tokenizer.get_vocab_size(true);
        config.bos_token_id = tokenizer::end_of_text(&tokenizer);
        config.eos_token_id = config.bos_token_id;
        config.max_position_embeddings = config.max_position_embeddings.max(self.data.context);
        let chat = ChatFormat::QuestionAnswer;
        let (train_set, eval_set) = prepare(
            &rows,
            (&tokenizer, &chat),
            &self.data,
            self.train.seed,
            &config,
        )?;
        let mut weights = random_weights(&config, self.train.seed, &device)?;
        let vars = make_trainable(&mut weights)?;
        let model = Llama::new(config.clone(), &weights)?;
        let sets = Sets {
            rows: &rows,
            train: &train_set,
            eval: &eval_set,
        };
        let metrics = train_and_evaluate("pretrain", &model, vars, &sets, &self.train, progress)?;
        std::fs::create_dir_all(&self.out).map_err(|e| MlError::io(&self.out, e))?;
        let tokenizer_path = self.out.join(TOKENIZER_FILE);
        tokenizer::save(&tokenizer, &tokenizer_path)?;
        save_checkpoint(&self.out, &config, &weights, Some(&tokenizer_path))?;
        write_outputs(&self.out, &metrics, &sets)?;
        Ok(metrics)
    }
}

/// The rows of a job and the examples made of them.
struct Sets<'a> {
    rows: &'a [Row],
    train: &'a [Example],
    eval: &'a [Example],
}

/// Evaluates, trains every variable of `model`, evaluates again; the metrics count the model's
/// parameters as trainable, which callers adjust when only an adapter trains.
fn train_and_evaluate(
    kind: &str,
    model: &Llama,
    vars: Vec<Var>,
    sets: &Sets,
    options: &TrainOptions,
    progress: &mut OnStep<'_>,
) -> Result<Metrics> {
    let eval_before = evaluate_if_any(model, sets.eval, options.batch_size)?;
    let run = train(model, vars, sets.train, options, progress)?;
    let eval_after = evaluate_if_any(model, sets.eval, options.batch_size)?;
    Ok(Metrics {
        kind: kind.into(),
        train_rows: sets.train.len(),
        eval_rows: sets.eval.len(),
        trainable_parameters: model.config().parameter_count(),
        total_parameters: model.config().parameter_count(),
        options: options.clone(),
        eval_before,
        eval_after,
        run,
        peak_memory_bytes: peak_memory_bytes(),
    })
}

fn prepare(
    rows: &[Row],
    (tokenizer, chat): (&tokenizers::Tokenizer, &ChatFormat),
    data: &DataOptions,
    seed: u64,
    config: &ModelConfig,
) -> Result<(Vec<Example>, Vec<Example>)> {
    if !(0.0..1.0).contains(&data.eval_split) {
        return Err(MlError::Config(format!(
            "--eval-split {} must be in [0, 1)",
            data.eval_split
        )));
    }
    let context = data.context.min(config.max_position_embeddings);
    let examples = tokenize(rows, tokenizer, chat, context)?;
    if let Some(bad) = examples
        .iter()
        .flat_map(|e| &e.tokens)
        .find(|&&t| t as usize >= config.vocab_size)
    {
        return Err(MlError::Input(format!(
            "the tokenizer produced id {bad}, outside the model's vocabulary of {}; is tokenizer.json the model's own?",
            config.vocab_size
        )));
    }
    Ok(split(examples, data.eval_split, seed))
}

fn evaluate_if_any(
    model: &Llama,
    examples: &[Example],
    batch_size: usize,
) -> Result<Option<Evaluation>> {
    if examples.is_empty() {
        Ok(None)
    } else {
        evaluate(model, examples, batch_size).map(Some)
    }
}

fn write_outputs(out: &Path, metrics: &Metrics, sets: &Sets) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| MlError::io(out, e))?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| MlError::io(&path, e))
    };
    write(
        METRICS_FILE,
        serde_json::to_string_pretty(metrics).expect("metrics serialize"),
    )?;
    let losses: Vec<f64> = metrics.run.curve.iter().map(|p| p.loss).collect();
    let title = format!("{} training loss", metrics.kind);
    write(
        LOSS_CURVE_FILE,
        loss_curve_svg(
            &title,
            &losses,
            metrics.eval_before.map(|e| e.loss),
            metrics.eval_after.map(|e| e.loss),
        ),
    )?;
    let record = |split: &'static str| {
        move |e: &Example| RowRecord {
            id: &sets.rows[e.row].id,
            contributor: &sets.rows[e.row].contributor,
            split,
        }
    };
    let records: Vec<RowRecord> = sets
        .train
        .iter()
        .map(record("train"))
        .chain(sets.eval.iter().map(record("eval")))
        .collect();
    write(
        ROWS_FILE,
        serde_json::to_string_pretty(&records).expect("rows serialize"),
    )
}

/// Reads `metrics.json` of a finished job.
pub fn read_metrics(dir: &Path) -> Result<Metrics> {
    let path = dir.join(METRICS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| MlError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|source| MlError::Json { path, source })
}
