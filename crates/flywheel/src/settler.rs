//! The settlement batcher: completions' signed orders and receipts are queued, and whatever
//! arrives within a few milliseconds goes on-chain together in one `settleBatch` per operator,
//! signed with the operator's key. A caller learns the transaction hash as soon as the batch is
//! sent, not when it is included, so settling never holds a response for a block.
//!
//! Sending does not wait for inclusion: while one batch waits for its block, the next is sent.
//!
//! Every settlement is written to `<datadir>/settlements/pending/<receiptId>.json` before it is
//! queued and removed only once the chain has it, so a crash loses none: on restart the pending
//! ones are sent again. None is charged twice: the order's nonce is spent on-chain by the first
//! settlement, and a settlement whose nonce is already spent is dropped as done. A batch that
//! reverts is retried one settlement at a time; one that still fails is moved to `failed/` with
//! the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolStruct, SolValue};
use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    routing::get,
};
use openledger_primitives::addresses::SETTLEMENT;
use openledger_protocol::abi::ISettlement;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::holds::Holds;
use crate::shared::ApiError;

/// How long the batcher waits for more settlements after the first of a batch.
const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// Most settlements in one transaction.
const MAX_BATCH: usize = 64;

/// A settlement as it is kept on disk.
#[derive(Serialize, Deserialize)]
struct Stored {
    operator: Address,
    /// The ABI encoding of the `ISettlement.Settlement`.
    settlement: Bytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A queued settlement, with who waits for its transaction hash.
struct Queued {
    id: B256,
    operator: Address,
    settlement: ISettlement::Settlement,
    reply: Option<oneshot::Sender<Result<B256, String>>>,
}

/// The batcher's handle.
pub struct Settler {
    dir: PathBuf,
    queue: mpsc::UnboundedSender<Queued>,
    reader: Client,
}

/// The receipt id of `settlement`: its order's EIP-712 struct hash, as Settlement records it.
pub fn receipt_id(settlement: &ISettlement::Settlement) -> B256 {
    settlement.order.eip712_hash_struct()
}

impl Settler {
    /// Starts the batcher on `chain`, settling as the operators whose keys are in `keys`, with
    /// its queue in `dir`; queues again what a stop left pending.
    pub fn start(
        chain: &Client,
        keys: &[PrivateKeySigner],
        dir: PathBuf,
        holds: Arc<Holds>,
    ) -> anyhow::Result<Arc<Self>> {
        for sub in ["pending", "failed"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let (queue, receiver) = mpsc::unbounded_channel();
        for (id, stored) in read_dir(&dir.join("pending"))? {
            let settlement = ISettlement::Settlement::abi_decode(&stored.settlement)
                .with_context(|| format!("the pending settlement {id} is corrupt"))?;
            tracing::info!("settling {id} again, left pending by the last run");
            // Its escrow and order nonce stay held until it is done, as before the stop.
            let order = &settlement.order;
            holds.hold_pending(id, order.user, order.maxFee, order.nonce);
            let queued = Queued {
                id,
                operator: stored.operator,
                settlement,
                reply: None,
            };
            queue.send(queued).expect("the receiver is alive");
        }
        let operators = keys
            .iter()
            .map(|k| (k.address(), chain.with_signer(k.clone())))
            .collect::<BTreeMap<_, _>>();
        let worker = Arc::new(Worker {
            dir: dir.clone(),
            holds,
            operators,
            sending: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(worker.run(receiver));
        Ok(Arc::new(Self {
            dir,
            queue,
            reader: chain.clone(),
        }))
    }

    /// Keeps `settlement` on disk and queues it for `operator`; returns its receipt id and the
    /// hash of the transaction it went out in.
    pub async fn settle(
        &self,
        operator: Address,
        settlement: ISettlement::Settlement,
    ) -> anyhow::Result<(B256, B256)> {
        let id = receipt_id(&settlement);
        if self.dir.join("pending").join(file_name(id)).exists() {
            anyhow::bail!("a settlement of this order ({id}) is pending already");
        }
        let stored = Stored {
            operator,
            settlement: settlement.abi_encode().into(),
            error: None,
        };
        write(&self.dir.join("pending"), id, &stored)?;
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            id,
            operator,
            settlement,
            reply: Some(reply),
        };
        self.queue
            .send(queued)
            .map_err(|_| anyhow::anyhow!("the settlement batcher stopped"))?;
        let tx = answer
            .await
            .context("the settlement batcher stopped")?
            .map_err(anyhow::Error::msg)?;
        Ok((id, tx))
    }

    /// Where settlement `id` stands in this node's queue: `pending`, or `failed` with the
    /// reason; `None` when the queue holds no record of it.
    fn queued(&self, id: B256) -> Option<(&'static str, Option<String>)> {
        ["pending", "failed"].into_iter().find_map(|state| {
            let bytes = std::fs::read(self.dir.join(state).join(file_name(id))).ok()?;
            let stored: Stored = serde_json::from_slice(&bytes).ok()?;
            Some((state, stored.error))
        })
    }

    /// `GET /settlements/{receiptId}`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/settlements/{id}", get(show))
            .with_state(self)
    }
}

/// A settlement's state: the chain's receipt status once it holds the receipt (`settled`,
/// `verified`, `corrected`), else `pending` or `failed` (with `error`) in this node's queue.
async fn show(
    State(settler): State<Arc<Settler>>,
    UrlPath(id): UrlPath<B256>,
) -> Result<Json<Value>, ApiError> {
    let status = settler
        .reader
        .view(
            SETTLEMENT,
            &ISettlement::receiptStatusCall { receiptId: id },
        )
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))?;
    if status.status != ISettlement::ReceiptStatus::Unknown {
        return Ok(Json(json!({
            "receiptId": id,
            "state": format!("{:?}", status.status).to_lowercase(),
            "settledAt": status.settledAt,
        })));
    }
    let (state, error) = settler
        .queued(id)
        .ok_or_else(|| ApiError::not_found(format!("no settlement {id}")))?;
    Ok(Json(
        json!({"receiptId": id, "state": state, "error": error}),
    ))
}

/// A batch being sent.
type Sending = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

struct Worker {
    dir: PathBuf,
    /// The escrow held for each settlement, let go of once it is done or failed.
    holds: Arc<Holds>,
    operators: BTreeMap<Address, Client>,
    sending: tokio::sync::Mutex<()>,
}

impl Worker {
    async fn run(self: Arc<Self>, mut receiver: mpsc::UnboundedReceiver<Queued>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    _ => break,
                }
            }
            let mut by_operator: BTreeMap<Address, Vec<Queued>> = BTreeMap::new();
            for queued in batch {
                by_operator.entry(queued.operator).or_default().push(queued);
            }
            for (operator, batch) in by_operator {
                self.clone().send(operator, batch).await;
            }
        }
    }

    /// Sends `batch` for `operator` in one transaction and tells whoever waits its hash; its
    /// inclusion is awaited on a task of its own, so the next batch goes out at once.
    ///
    /// Boxed, as sending and retrying call each other.
    fn send(self: Arc<Self>, operator: Address, batch: Vec<Queued>) -> Sending {
        Box::pin(async move { self.send_now(operator, batch).await })
    }

    async fn send_now(self: Arc<Self>, operator: Address, batch: Vec<Queued>) {
        let Some(client) = self.operators.get(&operator) else {
            for queued in batch {
                self.fail(
                    queued,
                    format!("this node holds no key of operator {operator}"),
                );
            }
            return;
        };
        // A settlement nobody has been answered for yet carries a nonce checked at admission or
        // drawn at random; only those sent before (recovered, retried) may be on-chain already.
        let (mut batch, sent_before): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|q| q.reply.is_some());
        batch.extend(self.drop_settled(client, sent_before).await);
        if batch.is_empty() {
            return;
        }
        let settlements = batch.iter().map(|q| q.settlement.clone()).collect();
        let call = ISettlement::settleBatchCall { settlements };
        let sent = {
            // One transaction at a time, so that each takes the next account nonce.
            let _turn = self.sending.lock().await;
            client.submit(SETTLEMENT, &call, U256::ZERO).await
        };
        match sent {
            Ok(hash) => {
                for queued in &mut batch {
                    if let Some(reply) = queued.reply.take() {
                        let _ = reply.send(Ok(hash));
                    }
                }
                tokio::spawn(self.confirm(operator, hash, batch));
            }
            Err(e) => self.retry(operator, batch, e).await,
        }
    }

    /// Waits for `batch`'s transaction `hash`: done when it succeeded, retried when not.
    async fn confirm(self: Arc<Self>, operator: Address, hash: B256, batch: Vec<Queued>) {
        let client = &self.operators[&operator];
        match client.wait(hash).await {
            Ok(_) => batch.iter().for_each(|q| self.done(q.id)),
            Err(e) => self.retry(operator, batch, e).await,
        }
    }

    /// After `batch` failed with `error`: each of a batch is sent alone; one alone that the
    /// chain has not settled meanwhile has failed.
    async fn retry(self: Arc<Self>, operator: Address, batch: Vec<Queued>, error: anyhow::Error) {
        if batch.len() == 1 {
            let client = &self.operators[&operator];
            if let Some(queued) = self.drop_settled(client, batch).await.pop() {
                self.fail(queued, format!("{error:#}"));
            }
            return;
        }
        tracing::warn!(
            "a batch of {} failed ({error:#}); settling one by one",
            batch.len()
        );
        for queued in batch {
            self.clone().send(operator, vec![queued]).await;
        }
    }

    /// `batch` less the settlements whose nonce the chain has spent (settled already, before a
    /// crash or by an earlier batch), which are done. A settlement whose check fails is kept.
    async fn drop_settled(&self, client: &Client, batch: Vec<Queued>) -> Vec<Queued> {
        let mut left = Vec::new();
        for queued in batch {
            let order = &queued.settlement.order;
            let used = ISettlement::nonceUsedCall {
                user: order.user,
                nonce: order.nonce,
            };
            match client.view(SETTLEMENT, &used).await {
                Ok(true) => {
                    self.done(queued.id);
                    // Never sent, so another settlement spent the nonce: this one pays nothing.
                    if let Some(reply) = queued.reply {
                        let _ = reply.send(Err(format!(
                            "the order's nonce {} is spent: it was settled already",
                            order.nonce
                        )));
                    }
                }
                _ => left.push(queued),
            }
        }
        left
    }

    fn done(&self, id: B256) {
        let _ = std::fs::remove_file(self.dir.join("pending").join(file_name(id)));
        self.holds.release(id);
    }

    /// Moves `queued` to `failed/` with `error`, telling whoever still waits.
    fn fail(&self, queued: Queued, error: String) {
        tracing::warn!("settlement {} failed: {error}", queued.id);
        let stored = Stored {
            operator: queued.operator,
            settlement: queued.settlement.abi_encode().into(),
            error: Some(error.clone()),
        };
        if let Err(e) = write(&self.dir.join("failed"), queued.id, &stored) {
            tracing::warn!("cannot record the failed settlement {}: {e:#}", queued.id);
        }
        self.done(queued.id);
        if let Some(reply) = queued.reply {
            let _ = reply.send(Err(error));
        }
    }
}

fn file_name(id: B256) -> String {
    format!("{id}.json")
}

/// Writes `stored` as `dir/<id>.json`, whole or not at all.
fn write(dir: &Path, id: B256, stored: &Stored) -> anyhow::Result<()> {
    let path = dir.join(file_name(id));
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(stored)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// The settlements kept in `dir`, by receipt id.
fn read_dir(dir: &Path) -> anyhow::Result<Vec<(B256, Stored)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<B256>().ok());
        let Some(id) = id else { continue };
        let stored = serde_json::from_slice(&std::fs::read(&path)?)
            .with_context(|| format!("{} is corrupt", path.display()))?;
        out.push((id, stored));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use alloy_primitives::keccak256;
    use alloy_signer::SignerSync;
    use openledger_primitives::OPEN;

    use super::*;
    use crate::ledger::inference_receipt;
    use crate::testing::{CHAIN_ID, TestChain};
    use openledger_protocol::settlement::AttributionMethod;

    /// Account 4's order for `model`, signed, with the receipt of a short completion.
    async fn settlement(tc: &TestChain, model: U256, datanet: U256) -> ISettlement::Settlement {
        let quote = ISettlement::quoteCall {
            modelId: model,
            inputTokens: 10,
            outputTokens: 3,
        };
        let order = ISettlement::InferenceOrder {
            user: tc.keys[4].address(),
            modelId: model,
            maxFee: tc.client.view(SETTLEMENT, &quote).await.unwrap(),
            nonce: U256::from(7),
            expiry: tc.client.latest_timestamp().await.unwrap() + 3_600,
        };
        let domain = openledger_protocol::settlement::domain(CHAIN_ID);
        let signature = tc.keys[4]
            .sign_hash_sync(&order.eip712_signing_hash(&domain))
            .unwrap();
        let receipt = inference_receipt(
            (10, 3),
            ("p", "o"),
            (1, datanet, 1),
            AttributionMethod::Span,
            &[],
        )
        .unwrap();
        ISettlement::Settlement {
            order,
            signature: signature.as_bytes().to_vec().into(),
            receipt,
        }
    }

    #[tokio::test]
    async fn a_settlement_a_stop_left_pending_is_sent_at_the_next_start_and_once() {
        let tc = TestChain::start(5);
        let dir = tempfile::tempdir().unwrap();
        let (datanet, _) = tc.datanet().await;
        let model = tc.deployed_model(datanet, keccak256(b"w")).await;
        tc.deposit(4, OPEN).await;
        let settlement = settlement(&tc, model, datanet).await;
        let id = receipt_id(&settlement);
        // Kept on disk, as the batcher keeps a settlement before sending it, when the node
        // stopped.
        let pending = dir.path().join("settlements").join("pending");
        std::fs::create_dir_all(&pending).unwrap();
        let stored = Stored {
            operator: tc.keys[3].address(),
            settlement: settlement.abi_encode().into(),
            error: None,
        };
        std::fs::write(
            pending.join(file_name(id)),
            serde_json::to_vec(&stored).unwrap(),
        )
        .unwrap();

        let holds = Arc::new(Holds::default());
        let settler =
            Settler::start(&tc.client, &tc.keys, dir.path().join("settlements"), holds).unwrap();
        let status = ISettlement::receiptStatusCall { receiptId: id };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while tc.client.view(SETTLEMENT, &status).await.unwrap().status
            != ISettlement::ReceiptStatus::Settled
        {
            assert!(tokio::time::Instant::now() < deadline, "never settled");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Done with once it is on-chain; the same order again is refused before anything is sent.
        while pending.join(file_name(id)).exists() {
            assert!(tokio::time::Instant::now() < deadline, "never done with");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let again = settler
            .settle(tc.keys[3].address(), settlement)
            .await
            .unwrap_err();
        assert!(again.to_string().contains("spent"), "{again:#}");
    }
}
