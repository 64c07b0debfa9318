//! Keeps the ledger of pending uploads in step with the chain: a `Contributed` event of the
//! Datanets module takes its upload out of the ledger (its content is kept for good), and uploads
//! nobody contributed within [`UNCONTRIBUTED_TTL_SECS`] are deleted from the content store.
//!
//! It looks at every block: first those committed since the ledger was last written (a restart,
//! or events missed under load), then each new one as it is committed.

use std::sync::Arc;

use alloy_consensus::ReceiptEnvelope;
use alloy_eips::eip2718::Decodable2718;
use alloy_sol_types::SolEvent;
use openledger_chain::{Chain, ChainEvent};
use openledger_content::{ContentStore, PendingUploads};
use openledger_primitives::addresses;
use openledger_protocol::abi::IDatanets;
use tokio::sync::broadcast::error::RecvError;

/// How long an upload may wait for its contribution before it is deleted: a day.
pub const UNCONTRIBUTED_TTL_SECS: u64 = 24 * 60 * 60;

/// Runs until the chain's event channel closes.
pub async fn run(chain: Arc<Chain>, store: ContentStore, pending: Arc<PendingUploads>) {
    let mut events = chain.subscribe();
    let keep = move || {
        let (chain, store, pending) = (chain.clone(), store.clone(), pending.clone());
        async move {
            let result = tokio::task::spawn_blocking(move || catch_up(&chain, &store, &pending));
            match result.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot keep the pending uploads"),
                Err(e) => tracing::error!(error = %e, "the pending-uploads keeper panicked"),
            }
        }
    };
    keep().await;
    loop {
        match events.recv().await {
            Ok(ChainEvent::Block(_)) | Err(RecvError::Lagged(_)) => keep().await,
            Ok(ChainEvent::PendingTransaction(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Applies the contributions of every block the ledger has not seen, then collects what expired.
fn catch_up(chain: &Chain, store: &ContentStore, pending: &PendingUploads) -> anyhow::Result<()> {
    apply_contributions(chain, pending)?;
    let cutoff = chain.now().saturating_sub(UNCONTRIBUTED_TTL_SECS);
    let _gate = pending.exclusive();
    for hash in pending.expire(cutoff)? {
        store.remove(hash)?;
        tracing::info!(%hash, "deleted an upload nobody contributed within a day");
    }
    Ok(())
}

/// Takes the uploads the chain has recorded contributions of (in blocks the ledger has not
/// seen) out of the ledger, so that none is counted twice against a quota.
pub fn apply_contributions(chain: &Chain, pending: &PendingUploads) -> anyhow::Result<()> {
    let reader = chain.reader()?;
    let head = reader.head()?.unwrap_or_default();
    for number in pending.last_block() + 1..=head {
        for raw in reader.receipts(number)?.unwrap_or_default() {
            let receipt = ReceiptEnvelope::decode_2718(&mut raw.as_ref())?;
            for log in receipt.logs() {
                if log.address != addresses::DATANETS {
                    continue;
                }
                if let Ok(event) = IDatanets::Contributed::decode_log(log) {
                    pending.contributed(
                        event.contentHash,
                        event.contributor,
                        event.datanetId,
                        number,
                    )?;
                }
            }
        }
        pending.seen_block(number)?;
    }
    Ok(())
}
