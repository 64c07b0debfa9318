//! The block producer: seals a block every block time, as soon as a transaction arrives, or only
//! when asked (a dev chain's `evm_mine`), as [`Chain::mining`] says; the dev methods switch
//! between them while it runs.

use std::sync::Arc;

use crate::{chain::Chain, clock::Mining};

/// Produces blocks until the task is dropped, starting with `mining` and following every later
/// change of it.
pub async fn run(chain: Arc<Chain>, mining: Mining) {
    chain.set_mining(mining);
    let mut changes = chain.watch_mining();
    loop {
        let mining = *changes.borrow_and_update();
        tokio::select! {
            () = seal(&chain, mining) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// Seals blocks as `mining` says, forever.
async fn seal(chain: &Arc<Chain>, mining: Mining) {
    match mining {
        Mining::OnArrival => loop {
            chain.transaction_arrived().await;
            // A wake-up left from a time blocks were sealed only on request may find the pool
            // already emptied by them.
            if !chain.pool_is_empty() {
                produce(chain).await;
            }
        },
        Mining::Every(block_time) => {
            let start = tokio::time::Instant::now() + block_time;
            let mut ticker = tokio::time::interval_at(start, block_time);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                produce(chain).await;
            }
        }
        Mining::Manual => std::future::pending().await,
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
