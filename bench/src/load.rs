//! The end-to-end load over JSON-RPC, run against anvil and openledger with the same settings.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use alloy_primitives::{Address, B256, Bytes, TxKind, U64, keccak256};
use alloy_signer_local::PrivateKeySigner;
use anyhow::{Context, bail};
use jsonrpsee::{
    core::client::ClientT,
    http_client::{HttpClient, HttpClientBuilder},
    rpc_params,
};
use std::os::unix::process::CommandExt;

use crate::{
    Args, submit,
    workload::{Workload, dev_signer, fund_tokens, presign, sign},
};

/// A node under load; killed when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    client: HttpClient,
    _datadir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        // The node runs in its own process group: npm's `anvil` is a wrapper script whose child
        // is the real node, and both must go.
        let group = self.child.id() as libc::pid_t;
        // SAFETY: killpg only sends a signal to the group this process created.
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start(name: &'static str, binary: &Path, args: &Args) -> anyhow::Result<Node> {
    if !binary.exists() {
        bail!("{name} binary not found at {}", binary.display());
    }
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let datadir = tempfile::tempdir()?;
    let mut command = Command::new(binary);
    match name {
        "anvil" => command.args(["--port", &port.to_string(), "--quiet"]),
        _ => command.args([
            "dev",
            "--datadir",
            &datadir.path().display().to_string(),
            "--rpc-addr",
            &format!("127.0.0.1:{port}"),
            "--api-addr",
            "127.0.0.1:0",
        ]),
    };
    // Both nodes take these flags under the same names, except that anvil mines on each
    // transaction (its default) when no block time is given rather than when it is 0.
    if args.block_time > 0 || name != "anvil" {
        command.args(["--block-time", &args.block_time.to_string()]);
    }
    command.args([
        "--accounts",
        &(args.senders + 1).to_string(),
        "--gas-limit",
        &args.gas_limit.to_string(),
    ]);
    let log_path = datadir.path().join("node.log");
    let child = command
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    // A block of a large run lists more hashes than jsonrpsee's 10 MB default answer (a
    // 200,000-transaction block is ~13 MB of them).
    let client = HttpClientBuilder::default()
        .max_response_size(1 << 30)
        .max_concurrent_requests(1024)
        .request_timeout(Duration::from_secs(60))
        .build(format!("http://127.0.0.1:{port}"))?;
    let mut node = Node {
        child,
        addr,
        client,
        _datadir: datadir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while node
        .client
        .request::<String, _>("eth_chainId", rpc_params![])
        .await
        .is_err()
    {
        if node.child.try_wait()?.is_some() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("{name} exited at start:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("{name} did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(node)
}

fn quantity(s: &str) -> anyhow::Result<u64> {
    Ok(u64::from_str_radix(s.trim_start_matches("0x"), 16)?)
}

/// A parameterless method that answers a quantity (`eth_chainId`, `eth_blockNumber`).
async fn ask_quantity(client: &HttpClient, method: &str) -> anyhow::Result<u64> {
    quantity(&client.request::<String, _>(method, rpc_params![]).await?)
}

async fn nonce(client: &HttpClient, address: Address) -> anyhow::Result<u64> {
    quantity(
        &client
            .request::<String, _>("eth_getTransactionCount", rpc_params![address, "pending"])
            .await?,
    )
}

async fn wait_receipt(client: &HttpClient, hash: B256) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let receipt: serde_json::Value = client
            .request("eth_getTransactionReceipt", rpc_params![hash])
            .await?;
        if !receipt.is_null() {
            return Ok(receipt);
        }
        if Instant::now() > deadline {
            bail!("transaction {hash} not included within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deploys the token and gives every sender a balance of it; returns the token's address.
async fn prepare_erc20(
    node: &Node,
    chain_id: u64,
    token: &Bytes,
    senders: &[PrivateKeySigner],
) -> anyhow::Result<Address> {
    let deployer = dev_signer(0)?;
    let mut next = nonce(&node.client, deployer.address()).await?;
    let raw = sign(
        &deployer,
        chain_id,
        next,
        TxKind::Create,
        3_000_000,
        token.clone(),
    );
    let hash: B256 = node
        .client
        .request("eth_sendRawTransaction", rpc_params![raw])
        .await?;
    let receipt = wait_receipt(&node.client, hash).await?;
    let address: Address = serde_json::from_value(receipt["contractAddress"].clone())?;
    let mut last = hash;
    for sender in senders {
        next += 1;
        let raw = sign(
            &deployer,
            chain_id,
            next,
            TxKind::Call(address),
            100_000,
            fund_tokens(sender.address()),
        );
        last = node
            .client
            .request("eth_sendRawTransaction", rpc_params![raw])
            .await?;
    }
    wait_receipt(&node.client, last).await?;
    Ok(address)
}

/// The measured outcome of one run.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Included transactions per second, first submission to last inclusion.
    pub tps: f64,
    /// Accepted submissions per second, first submission to last answer.
    pub submit_tps: f64,
    /// Median submit-to-inclusion latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
    /// Submissions refused for now (a full pool, or a sender's full share) and sent again.
    pub refused: usize,
    /// Blocks the gas limit filled (see [`Inclusions::full_blocks`]).
    pub full_blocks: usize,
}

async fn run(
    name: &'static str,
    binary: &Path,
    args: &Args,
    workload: Workload,
    token: &Bytes,
) -> anyhow::Result<Outcome> {
    let node = start(name, binary, args).await?;
    let chain_id = ask_quantity(&node.client, "eth_chainId").await?;
    let senders: Vec<PrivateKeySigner> = (1..=args.senders)
        .map(dev_signer)
        .collect::<Result<_, _>>()?;
    let token_address = match workload {
        Workload::Erc20 => prepare_erc20(&node, chain_id, token, &senders).await?,
        Workload::Native => Address::ZERO,
    };
    let mut nonces = Vec::new();
    for sender in &senders {
        nonces.push(nonce(&node.client, sender.address()).await?);
    }
    let txs = presign(
        workload,
        &senders,
        &nonces,
        chain_id,
        token_address,
        args.txs,
    );
    let hashes: Vec<B256> = txs.iter().map(keccak256).collect();
    let requests = submit::requests(&txs);
    let start_block = ask_quantity(&node.client, "eth_blockNumber").await?;

    let started = Instant::now();
    let watcher = tokio::spawn(watch_inclusions(
        node.client.clone(),
        start_block,
        hashes,
        workload.tx_gas(),
        started,
    ));
    let submitted = submit::submit_all(node.addr, requests, shape(args), started).await?;
    let submit_time = started.elapsed();
    let Inclusions {
        at: included,
        full_blocks,
    } = watcher.await??;

    let last = included.iter().copied().fold(Duration::ZERO, Duration::max);
    let mut latencies: Vec<f64> = included
        .iter()
        .zip(&submitted.sent)
        .map(|(included, sent)| included.saturating_sub(*sent).as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    drop(node);
    Ok(Outcome {
        tps: args.txs as f64 / last.as_secs_f64(),
        submit_tps: args.txs as f64 / submit_time.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        refused: submitted.refused,
        full_blocks,
    })
}

fn shape(args: &Args) -> submit::Shape {
    submit::Shape {
        concurrency: args.concurrency,
        batch: args.batch,
    }
}

/// Measures how many trivial calls (`eth_chainId`) each node answers a second over the same
/// connections as the load: the part of a submission's cost that is HTTP, JSON-RPC and the load
/// generator, before the transaction's own (signature recovery, pool admission, execution).
pub async fn floor(args: &Args) -> anyhow::Result<()> {
    println!(
        "\nrequest floor: {} eth_chainId calls, same connections",
        args.txs
    );
    let mut rates = Vec::new();
    for (name, binary) in [("anvil", &args.anvil), ("openledger", &args.openledger)] {
        let node = start(name, binary, args).await?;
        let requests = submit::trivial_calls("eth_chainId", args.txs);
        let started = Instant::now();
        submit::submit_all(node.addr, requests, shape(args), started).await?;
        let rate = args.txs as f64 / started.elapsed().as_secs_f64();
        println!("{name:<11} {rate:>10.0} calls/s");
        rates.push(rate);
    }
    println!("ratio openledger/anvil: {:.2}x calls", rates[1] / rates[0]);
    Ok(())
}

/// The fields of a block the watcher reads. Decoding only these, straight into their types,
/// keeps the watcher's cost per transaction small: it shares the cores with the node.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockSummary {
    transactions: Vec<B256>,
    gas_used: U64,
    gas_limit: U64,
}

/// What the watcher saw of a run's blocks.
pub(crate) struct Inclusions {
    /// When each awaited transaction was first seen included, in the order of the hashes.
    pub at: Vec<Duration>,
    /// Blocks left with too little gas for one more of the load's transactions: while blocks
    /// are full, the chain's gas limit bounds the run, not the node.
    pub full_blocks: usize,
}

/// Follows new blocks and records when each awaited transaction was first seen included, and
/// which blocks the gas limit filled (a block with less than `tx_gas` left).
pub(crate) async fn watch_inclusions(
    client: HttpClient,
    mut seen_up_to: u64,
    hashes: Vec<B256>,
    tx_gas: u64,
    started: Instant,
) -> anyhow::Result<Inclusions> {
    let mut included = vec![Duration::ZERO; hashes.len()];
    let mut full_blocks = 0;
    let mut pending: HashMap<B256, usize> = hashes.into_iter().zip(0..).collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !pending.is_empty() {
        if Instant::now() > deadline {
            bail!("{} transactions not included within 600 s", pending.len());
        }
        let head = ask_quantity(&client, "eth_blockNumber").await?;
        for number in seen_up_to + 1..=head {
            let block: BlockSummary = client
                .request(
                    "eth_getBlockByNumber",
                    rpc_params![format!("0x{number:x}"), false],
                )
                .await?;
            let now = started.elapsed();
            if block.gas_limit.saturating_sub(block.gas_used) < U64::from(tx_gas) {
                full_blocks += 1;
            }
            for hash in block.transactions {
                if let Some(index) = pending.remove(&hash) {
                    included[index] = now;
                }
            }
        }
        seen_up_to = head;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Inclusions {
        at: included,
        full_blocks,
    })
}

/// The run with the median throughput (the lower middle one for an even count).
fn median(mut runs: Vec<Outcome>) -> Outcome {
    runs.sort_by(|a, b| a.tps.total_cmp(&b.tps));
    runs[(runs.len() - 1) / 2]
}

fn print_outcome(workload: &str, name: &str, o: &Outcome) {
    println!(
        "{:<8} {:<11} {:>10.0} {:>10.1} {:>10.1} {:>10.0} {:>8}",
        workload, name, o.tps, o.p50_ms, o.p99_ms, o.submit_tps, o.refused
    );
    if o.full_blocks > 0 {
        println!(
            "warning: {} of {name}'s blocks were full: the gas limit, not the node, bounded \
             this run (raise --gas-limit)",
            o.full_blocks
        );
    }
}

/// Runs every workload against anvil, then openledger, `--repeat` times in alternation, and
/// prints each run, the medians and the ratio of the medians.
pub async fn compare(args: &Args, token: &Bytes) -> anyhow::Result<()> {
    println!("\nend to end over JSON-RPC (same load, same block time)");
    println!(
        "{:<8} {:<11} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "workload", "node", "tx/s", "p50 ms", "p99 ms", "submit/s", "refused"
    );
    for &workload in &args.workloads {
        let (mut anvil, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            let theirs = run("anvil", &args.anvil, args, workload, token).await?;
            print_outcome(workload.name(), "anvil", &theirs);
            anvil.push(theirs);
            let mine = run("openledger", &args.openledger, args, workload, token).await?;
            print_outcome(workload.name(), "openledger", &mine);
            ours.push(mine);
        }
        let (anvil, ours) = (median(anvil), median(ours));
        if args.repeat > 1 {
            print_outcome(workload.name(), "anvil med.", &anvil);
            print_outcome(workload.name(), "ours med.", &ours);
        }
        println!(
            "{:<8} ratio openledger/anvil: {:.2}x throughput",
            workload.name(),
            ours.tps / anvil.tps
        );
    }
    Ok(())
}
