//! `openledger-bench`: the same pre-signed load against anvil and `openledger dev`, in one run.
//!
//! For each workload (native transfers, ERC-20 transfers) it starts each node with the same block
//! time, pre-signs the transactions from many senders, submits them over JSON-RPC with a bounded
//! concurrency, watches the blocks for their inclusion, and reports included tx/s and the p50/p99
//! submit-to-inclusion latency, then the openledger/anvil ratio. It also measures block execution
//! and commit throughput (Mgas/s) in-process, without RPC.

mod execution;
mod load;
mod submit;
mod workload;

use std::path::PathBuf;

/// mimalloc rather than the system allocator: the node allocates per request and per
/// transaction on several threads, and glibc's malloc showed up at ~6% of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use crate::workload::Workload;

/// Benchmark openledger against anvil.
#[derive(Debug, Parser)]
#[command(name = "openledger-bench", version)]
pub struct Args {
    /// Transactions per workload and node.
    #[arg(long, default_value_t = 4_000)]
    txs: usize,
    /// Distinct senders (dev accounts 1..=N of the test mnemonic).
    #[arg(long, default_value_t = 40)]
    senders: u32,
    /// Concurrent JSON-RPC submissions.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Transactions per HTTP request: 1 sends each as its own JSON-RPC call, as wallets do;
    /// more sends JSON-RPC batches, which takes most of the per-request HTTP cost off both
    /// the node and the load generator.
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000)
    )]
    batch: usize,
    /// Runs per node and workload, alternating between the nodes; the ratio is taken between
    /// the median runs (throughput on a shared machine varies by ±15% from run to run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Block time given to both nodes, in seconds; 0 mines a block as soon as transactions
    /// arrive (anvil's default).
    #[arg(long, default_value_t = 1)]
    block_time: u64,
    /// Block gas limit given to both nodes in the RPC runs: high enough that neither is bound
    /// by it, so the figures measure the nodes rather than the chain parameter (1e9 held
    /// openledger to ~19,400 ERC-20 transfers a block once it took ~20,000 a second).
    #[arg(long, default_value_t = 10_000_000_000)]
    gas_limit: u64,
    /// The openledger binary.
    #[arg(long, default_value = "target/release/openledger")]
    openledger: PathBuf,
    /// The anvil binary (from `@foundry-rs/anvil` on npm).
    #[arg(long, default_value = "bench/node_modules/.bin/anvil")]
    anvil: PathBuf,
    /// Contract artifacts written by tests/e2e/compile.mjs (for the ERC-20).
    #[arg(long, default_value = "target/e2e/contracts.json")]
    contracts: PathBuf,
    /// Workloads to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "native,erc20"
    )]
    workloads: Vec<Workload>,
    /// Skip the RPC load (only measure in-process execution).
    #[arg(long)]
    execution_only: bool,
    /// Also measure each node's request floor: as many `eth_chainId` calls as there are
    /// transactions, over the same connections. Every submission pays that floor (HTTP, JSON-RPC,
    /// the load generator) before any work of its own.
    #[arg(long)]
    floor: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "openledger-bench: {} txs per run, {} senders, concurrency {}, batch {}, block time {}s",
        args.txs, args.senders, args.concurrency, args.batch, args.block_time
    );
    let token = workload::token_artifact(&args.contracts)?;
    if !args.execution_only {
        if args.floor {
            load::floor(&args).await?;
        }
        load::compare(&args, &token).await?;
    }
    execution::measure(&args, &token)?;
    Ok(())
}
