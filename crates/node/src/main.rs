//! `openledger`: the OpenLedger node, in one binary.

mod accounts;
mod attribution;
mod cli;
mod client;
mod content_api;
mod datadir;
mod db;
mod demo;
mod dev;
mod factory;
mod http;
mod metrics;
mod serve;
mod statetest;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: the node allocates per request and per
/// transaction on several threads, and glibc's malloc showed up at ~6% of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory a minute before mimalloc hands it back to the OS, against its default of
/// one second. A node frees most of a block's working memory between blocks one to two seconds
/// apart, and a training step (SmolLM2 at 8 × 256 tokens: 15 seconds, 6 GiB) frees its
/// activations as its backward pass goes and allocates them again in the next step's forward
/// pass; each time memory went back, it was faulted in again as zeroed transparent huge pages.
/// Under load that was 2.5x a node's page faults and ~4% more of its CPU (with the delay at ten
/// seconds); in that training step, a quarter of its time (20 s a step, 15 s with a minute). A
/// minute keeps a busy process's memory and still returns it once the process goes quiet.
fn keep_freed_memory_a_minute() {
    /// `mi_option_purge_delay` (milliseconds): the option's place in mimalloc's `mi_option_t`,
    /// which mimalloc keeps stable across versions (retired options keep their places), and
    /// which `libmimalloc-sys` does not name.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a plain integer option; mimalloc reads it when it next schedules a purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// How long freed memory stays with the process (see [`keep_freed_memory_a_minute`]); the
/// benchmarks of training give their child processes the same.
const PURGE_DELAY_MS: std::ffi::c_long = 60_000;

/// Ends the process quietly when its output pipe closes (`openledger … | head`), as command-line
/// tools do, instead of panicking in `println!`: Rust ignores SIGPIPE, so a write to a closed
/// pipe fails and `println!` panics on the failure.
fn exit_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// OpenLedger: the blockchain built for AI, with OPEN as gas.
#[derive(Debug, Parser)]
#[command(name = "openledger", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single-node development chain with prefunded accounts.
    Dev(dev::DevArgs),
    /// Run the flywheel end to end on a fresh dev chain: contribute, organize, build, use, reward.
    Demo(demo::DemoArgs),
    /// Run Ethereum GeneralStateTests JSON files through the chain's execution.
    Statetest(statetest::StateTestArgs),
    /// Inspect and check a data directory.
    Db(db::DbArgs),
    /// Datanets: create, upload and contribute files, curate versions, list and show.
    Datanet(cli::datanet::DatanetArgs),
    /// Models: pre-train a base model; propose, approve, register a trained adapter, deploy, show.
    Model(cli::model::ModelArgs),
    /// Inference escrow and rewards: deposit, withdraw, claim, show rewards.
    Settle(cli::settle::SettleArgs),
    /// Training jobs on a dev node: quote, submit (fee held from escrow), show, cancel.
    Job(cli::job::JobArgs),
    /// Governance: wrap OPEN into GOPEN, delegate, propose, vote, queue, execute, show.
    Gov(cli::gov::GovArgs),
    /// Staking: stake on models, unbond, claim rewards, slash, flag contributions.
    Stake(cli::stake::StakeArgs),
    /// Validators: register, rate settled inferences (commit, reveal), finalize, claim.
    Validator(cli::feedback::ValidatorArgs),
    /// The dev chain's clock: advance it by a duration (5m, 2h, 1d), show the latest block time.
    Time(cli::time::TimeArgs),
    /// Validator feedback: export accepted ratings as a preference dataset.
    Feedback(cli::feedback::FeedbackArgs),
    /// Training data: generate synthetic domain corpora.
    Data(factory::DataArgs),
    /// Tokenizers: train a byte-level BPE tokenizer.
    Tokenizer(factory::TokenizerArgs),
    /// Proof of Attribution: index data rows and attribute texts to the contributions in them.
    Attribution(attribution::AttributionArgs),
    /// Fine-tune LoRA adapters on a base model (ModelFactory), saved in the PEFT format.
    Train(factory::TrainArgs),
    /// OpenLoRA: serve a base model and many adapters behind an OpenAI-compatible API.
    Serve(serve::ServeArgs),
    /// Generate text with a base model and optionally an adapter.
    Generate(factory::GenerateArgs),
}

fn main() -> std::process::ExitCode {
    // SAFETY: nothing has started a thread yet.
    unsafe { openledger_ml::settle_thread_count() };
    keep_freed_memory_a_minute();
    http::raise_fd_limit();
    let cli = Cli::parse();
    // Servers keep Rust's default (a closed client socket must not kill the node); commands
    // whose output is read by a pipe end with it.
    if !matches!(
        cli.command,
        Command::Dev(_) | Command::Demo(_) | Command::Serve(_)
    ) {
        exit_quietly_on_closed_pipe();
    }
    // The demo embeds a node whose block-by-block log would drown its own progress.
    init_logging(match cli.command {
        Command::Demo(_) => "warn",
        _ => "info,jsonrpsee=warn",
    });
    let result = match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Statetest(args) => statetest::run(args),
        Command::Db(args) => db::run(args),
        Command::Datanet(args) => cli::datanet::run(args),
        Command::Model(args) => cli::model::run(args),
        Command::Settle(args) => cli::settle::run(args),
        Command::Job(args) => cli::job::run(args),
        Command::Gov(args) => cli::gov::run(args),
        Command::Stake(args) => cli::stake::run(args),
        Command::Validator(args) => cli::feedback::run(args),
        Command::Feedback(args) => cli::feedback::run_feedback(args),
        Command::Time(args) => cli::time::run(args),
        Command::Data(args) => factory::run_data(args),
        Command::Tokenizer(args) => factory::run_tokenizer(args),
        Command::Attribution(args) => attribution::run(args),
        Command::Train(args) => factory::run_train(args),
        Command::Generate(args) => factory::run_generate(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `OPENLEDGER_LOG` or else `default`.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENLEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
