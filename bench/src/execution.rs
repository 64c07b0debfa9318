//! Block execution and commit throughput without RPC: transactions go straight into the pool and
//! the timer covers only block production (execution, state root, durable commit), in blocks of
//! [`BLOCK_GAS`], of the order of the RPC runs' one-second blocks. The admission of
//! the transactions into the pool (decoding, signature recovery, the pool's checks) is timed
//! apart, one thread, as `admit tx/s`.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, TxKind};
use alloy_signer_local::PrivateKeySigner;
use openledger_chain::{Chain, ChainConfig, Store, mempool::PoolLimits};
use openledger_primitives::Genesis;

use crate::{
    Args,
    workload::{Workload, dev_signer, fund_tokens, presign, sign},
};

const CHAIN_ID: u64 = openledger_primitives::DEV_CHAIN_ID;

/// The gas limit of the blocks produced here: ~47,000 native or ~19,000 ERC-20 transfers, of the
/// order of the RPC runs' one-second blocks (~20,000 transactions). Fixed rather than the RPC runs'
/// `--gas-limit` (set high so that it never binds) so that the figures compare across runs;
/// the same since the seventh session.
const BLOCK_GAS: u64 = 1_000_000_000;

/// Produces blocks until the pool is empty; returns (gas, transactions, time spent producing).
fn drain(chain: &Chain, clock: &mut u64) -> anyhow::Result<(u64, usize, Duration)> {
    let (mut gas, mut txs, mut spent) = (0u64, 0usize, Duration::ZERO);
    loop {
        *clock += 1;
        let started = Instant::now();
        let block = chain.produce_block(*clock)?;
        spent += started.elapsed();
        if block.transactions.is_empty() {
            return Ok((gas, txs, spent));
        }
        gas += block.header.header.gas_used;
        txs += block.transactions.len();
    }
}

fn submit(chain: &Chain, txs: &[Bytes]) -> anyhow::Result<()> {
    for raw in txs {
        chain.submit_raw(raw)?;
    }
    Ok(())
}

/// Measures each workload's execution throughput on a chain stored in a temporary directory.
pub fn measure(args: &Args, token: &Bytes) -> anyhow::Result<()> {
    println!("\nblock execution + commit, in process (redb on disk, no RPC)");
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>12}",
        "workload", "txs", "Mgas/s", "tx/s", "admit tx/s"
    );
    let senders: Vec<PrivateKeySigner> = (1..=args.senders)
        .map(dev_signer)
        .collect::<Result<_, _>>()?;
    let deployer = dev_signer(0)?;
    for &workload in &args.workloads {
        let dir = tempfile::tempdir()?;
        let mut funded: Vec<Address> = vec![deployer.address()];
        funded.extend(senders.iter().map(|s| s.address()));
        let genesis = Genesis {
            gas_limit: BLOCK_GAS,
            ..Genesis::dev(CHAIN_ID, &funded)
        };
        let pool = PoolLimits {
            max_total: args.txs + 1_000,
            max_per_sender: args.txs,
            max_nonce_gap: args.txs as u64,
        };
        let chain = Chain::open(
            Store::open(&dir.path().join("chain.redb"))?,
            ChainConfig {
                genesis,
                modules: Default::default(),
                pool,
            },
        )?;
        let mut clock = 0;
        let token_address = deployer.address().create(0);
        if workload == Workload::Erc20 {
            let mut setup = vec![sign(
                &deployer,
                CHAIN_ID,
                0,
                TxKind::Create,
                3_000_000,
                token.clone(),
            )];
            for (i, sender) in senders.iter().enumerate() {
                let data = fund_tokens(sender.address());
                setup.push(sign(
                    &deployer,
                    CHAIN_ID,
                    i as u64 + 1,
                    TxKind::Call(token_address),
                    100_000,
                    data,
                ));
            }
            submit(&chain, &setup)?;
            drain(&chain, &mut clock)?;
        }
        let nonces = vec![0; senders.len()];
        let txs = presign(
            workload,
            &senders,
            &nonces,
            CHAIN_ID,
            token_address,
            args.txs,
        );
        let admitting = Instant::now();
        submit(&chain, &txs)?;
        let admitted = args.txs as f64 / admitting.elapsed().as_secs_f64();
        let (gas, included, spent) = drain(&chain, &mut clock)?;
        anyhow::ensure!(
            included == args.txs,
            "only {included} of {} transactions were included",
            args.txs
        );
        let secs = spent.as_secs_f64();
        println!(
            "{:<8} {:>10} {:>10.1} {:>12.0} {:>12.0}",
            workload.name(),
            included,
            gas as f64 / secs / 1e6,
            included as f64 / secs,
            admitted
        );
    }
    Ok(())
}
