//! The block producer: seals a block every `block_time`, or as soon as a transaction arrives
//! when the block time is zero.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::chain::Chain;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Produces blocks until the task is dropped. With a zero `block_time` a block is sealed for
/// every batch of transactions that arrives; otherwise one block (possibly empty) per interval.
pub async fn run(chain: Arc<Chain>, block_time: Duration) {
    if block_time.is_zero() {
        loop {
            chain.transaction_arrived().await;
            produce(&chain).await;
        }
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + block_time, block_time);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        produce(&chain).await;
    }
}

async fn produce(chain: &Arc<Chain>) {
    let chain = chain.clone();
    let result = tokio::task::spawn_blocking(move || chain.produce_block(chain.now())).await;
    match result {
        Ok(Ok(block)) if block.transactions.is_empty() => tracing::debug!(
            number = block.header.header.number,
            hash = %block.header.hash,
            "sealed an empty block"
        ),
        Ok(Ok(block)) => tracing::info!(
            number = block.header.header.number,
            hash = %block.header.hash,
            txs = block.transactions.len(),
            gas_used = block.header.header.gas_used,
            "sealed block"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "block production failed"),
        Err(e) => tracing::error!(error = %e, "block production panicked"),
    }
}
