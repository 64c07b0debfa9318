//! The ledger around OpenLoRA: every completion of a deployed model is paid for by a signed
//! order, attributed to the data of the model's datanet version, and settled on-chain by the
//! model's operator. The response's `openledger` field holds the attribution and the settlement.
//!
//! Who pays, either way:
//! - an API key standing for a dev account (`Authorization: Bearer dev-<N>`): the node signs the
//!   account's order after the completion, for exactly its fee;
//! - an order the client signed (EIP-712, domain `OpenLedger Settlement`), sent as the request
//!   body's `openledger` field: `{"order": {"user", "modelId", "maxFee", "nonce", "expiry"},
//!   "signature"}`. It is checked before any token is generated.
//!
//! Either way the payer must hold escrow in Settlement (`openledger settle deposit`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alloy_primitives::{Address, B256, Bytes, Signature, U256, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolStruct;
use anyhow::Context;
use axum::http::StatusCode;
use openledger_attribution::{Attribution, Credit};
use openledger_primitives::addresses::{DATANETS, MODELS, SETTLEMENT};
use openledger_protocol::abi::{IDatanets, IModels, ISettlement};
use openledger_protocol::settlement::AttributionMethod;
use openledger_serve::hook::{Admitted, Call, Completion, CompletionHook, HookFuture, Refusal};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::Client;
use crate::holds::{Hold, HoldError, Holds};
use crate::influence::InfluenceModel;
use crate::settler::{Settler, receipt_id};
use crate::shared::Flywheel;

/// How many of a model's most recent artifact versions an adapter is looked up among (an
/// outdated one on disk here; one being published in the content API): the walk is bounded,
/// while a creator may register any number of versions.
pub const MAX_EARLIER_ARTIFACTS: usize = 256;

/// How long an order the node signs stays valid, in seconds.
const ORDER_LIFETIME: u64 = 3_600;

/// The completion hook of `openledger dev`.
#[derive(Clone)]
pub struct Ledger {
    flywheel: Arc<Flywheel>,
    settler: Arc<Settler>,
    holds: Arc<Holds>,
    influence: Arc<Mutex<InfluenceCache>>,
}

/// Loaded gradient stores, by model, with the adapter hash they belong to.
type InfluenceCache = HashMap<U256, (B256, Arc<InfluenceModel>)>;

/// Who pays for a completion.
enum Payer {
    /// A dev account, whose order the node signs.
    Dev(PrivateKeySigner),
    /// An order the client signed.
    Signed(ISettlement::InferenceOrder, Bytes),
}

/// A client-signed order as the request body carries it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignedOrder {
    order: OrderJson,
    signature: Bytes,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OrderJson {
    user: Address,
    model_id: U256,
    max_fee: U256,
    nonce: U256,
    /// As the other fields, a number or a (decimal or 0x-hex) string.
    expiry: alloy_primitives::U64,
}

/// An admitted completion of a deployed model.
struct Pending {
    ledger: Ledger,
    model_id: U256,
    model: IModels::Model,
    payer: Payer,
    /// The escrow held for the worst case until the completion is settled.
    hold: Hold,
}

fn unavailable(e: anyhow::Error) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"))
}

impl Ledger {
    /// The ledger of the flywheel's chain, settling through `settler`, holding
    /// escrow in `holds` (which the settler lets go of).
    pub fn new(flywheel: Arc<Flywheel>, settler: Arc<Settler>, holds: Arc<Holds>) -> Self {
        Self {
            flywheel,
            settler,
            holds,
            influence: Arc::default(),
        }
    }

    /// The chain the ledger reads.
    fn reader(&self) -> &Client {
        &self.flywheel.chain
    }

    /// The on-chain model `model` names (`model-<id>`) if this node serves it: Deployed, and
    /// operated by a key the node holds (it settles the completions).
    async fn deployed_here(&self, model: &str) -> Result<(U256, IModels::Model), Refusal> {
        let model_id = model
            .strip_prefix("model-")
            .and_then(|id| id.parse::<U256>().ok())
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "`{model}` is not an on-chain model: ask for model-<id>, a deployed model"
                    ),
                )
            })?;
        let info = match self
            .reader()
            .view(MODELS, &IModels::getModelCall { modelId: model_id })
            .await
        {
            Ok(info) => info,
            Err(e) => return Err(self.missing_or_unavailable(model, model_id, e).await),
        };
        if info.status != IModels::Status::Deployed {
            let fix = match info.status {
                IModels::Status::Slashed => {
                    "a slashed model is never served again; its creator may propose a new one"
                }
                IModels::Status::Retired => "a retired model is not served any more",
                IModels::Status::Trained => {
                    "its creator deploys it with an operator's stake (openledger model deploy)"
                }
                _ => "it is served once trained and deployed with an operator's stake",
            };
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("model {model_id} is {:?}, not Deployed: {fix}", info.status),
            ));
        }
        if !self.operator_key(info.operator) {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this node holds no key of model {model_id}'s operator {}, so it cannot \
                     settle its completions",
                    info.operator
                ),
            ));
        }
        Ok((model_id, info))
    }

    /// Why model `model_id` could not be read: it does not exist (404, in OpenAI's words), or
    /// the chain did not answer.
    async fn missing_or_unavailable(
        &self,
        model: &str,
        model_id: U256,
        e: anyhow::Error,
    ) -> Refusal {
        match self
            .reader()
            .view(MODELS, &IModels::modelCountCall {})
            .await
        {
            Ok(count) if model_id.is_zero() || model_id > count => Refusal::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist"),
            ),
            _ => unavailable(e),
        }
    }

    async fn admit(&self, call: Call<'_>) -> Result<Pending, Refusal> {
        let (model_id, model) = self.deployed_here(call.model).await?;
        let payer = match call.extra {
            Some(extra) => self.check_order(extra, model_id).await?,
            None => {
                let account = self
                    .flywheel
                    .account(call.headers)
                    .map_err(|e| Refusal::new(e.0, e.1))?;
                Payer::Dev(self.flywheel.accounts[account].clone())
            }
        };
        // The worst case: every prompt token and as many output tokens as the request allows.
        let quote = ISettlement::quoteCall {
            modelId: model_id,
            inputTokens: call.prompt_tokens as u64,
            outputTokens: call.max_tokens as u64,
        };
        let worst = self
            .reader()
            .view(SETTLEMENT, &quote)
            .await
            .map_err(unavailable)?;
        let (user, nonce) = match &payer {
            Payer::Dev(key) => (key.address(), None),
            Payer::Signed(order, _) => (order.user, Some(order.nonce)),
        };
        if let Payer::Signed(order, _) = &payer
            && order.maxFee < worst
        {
            return Err(Refusal::new(
                StatusCode::PAYMENT_REQUIRED,
                format!(
                    "the order's maxFee is {} wei, under the {worst} wei this completion may cost \
                     ({} prompt tokens and up to {} generated): raise maxFee or lower max_tokens",
                    order.maxFee, call.prompt_tokens, call.max_tokens
                ),
            ));
        }
        let escrow = self.spendable(user).await?;
        let hold = self
            .holds
            .hold(user, escrow, worst, nonce)
            .map_err(|e| match e {
                HoldError::Insufficient { .. } => Refusal::new(
                    StatusCode::PAYMENT_REQUIRED,
                    format!(
                        "{e} (1 OPEN = 10^18 wei): deposit OPEN first (openledger settle deposit), \
                         or cancel an unlock of escrow (openledger settle unlock 0)"
                    ),
                ),
                HoldError::NonceInFlight(_) => Refusal::new(StatusCode::CONFLICT, e.to_string()),
            })?;
        self.recheck(&payer, user).await?;
        // Hashed only for a request whose payment is secured.
        self.check_adapter(model_id, &model).await?;
        Ok(Pending {
            ledger: self.clone(),
            model_id,
            model,
            payer,
            hold,
        })
    }

    /// Reads the chain again once the hold is taken: a settlement that landed between the first
    /// reads and the hold (spending the order's nonce, or escrow another completion held) would
    /// otherwise go unseen. The caller's hold is let go when it drops on a refusal.
    async fn recheck(&self, payer: &Payer, user: Address) -> Result<(), Refusal> {
        let escrow = self.spendable(user).await?;
        let held = self.holds.held(user);
        if escrow < held {
            return Err(Refusal::new(
                StatusCode::PAYMENT_REQUIRED,
                format!(
                    "{user} holds {escrow} wei of escrow that is not unlocking, under the {held} \
                     wei its completions in progress may cost (1 OPEN = 10^18 wei): deposit OPEN \
                     first, or cancel an unlock of escrow (openledger settle unlock 0)"
                ),
            ));
        }
        if let Payer::Signed(order, _) = payer {
            self.unspent(order).await?;
        }
        Ok(())
    }

    /// Why `weights` cannot be settled against `datanet` at `version`: a credited contribution
    /// that is not one of its approved contributions up to that version; `None` when all are.
    async fn outside_version(
        &self,
        datanet: U256,
        version: u64,
        weights: &[Credit],
    ) -> Option<String> {
        for credit in weights {
            let Ok(id) = credit.contribution.parse::<U256>() else {
                return Some(format!(
                    "{:?} is not a contribution id",
                    credit.contribution
                ));
            };
            // Unknown (the view reverts) or unreadable, it cannot be credited either way.
            let call = IDatanets::getContributionCall { contributionId: id };
            let contribution = self.reader().view(DATANETS, &call).await.ok();
            let inside = contribution.is_some_and(|c| {
                c.datanetId == datanet
                    && c.status == IDatanets::ContributionStatus::Approved
                    && c.version <= version
            });
            if !inside {
                return Some(format!(
                    "contribution {id} is not in datanet {datanet} version {version}"
                ));
            }
        }
        None
    }

    /// The escrow of `user` a new completion may count on: its balance less what is unlocking
    /// (which can leave once its delay has passed, and pays only for what was already served).
    async fn spendable(&self, user: Address) -> Result<U256, Refusal> {
        let escrow = self
            .reader()
            .view(SETTLEMENT, &ISettlement::escrowOfCall { account: user })
            .await
            .map_err(unavailable)?;
        Ok(escrow.balance.saturating_sub(escrow.unlocking))
    }

    /// Refuses an order whose nonce the chain has spent (a settled order cannot pay again).
    async fn unspent(&self, order: &ISettlement::InferenceOrder) -> Result<(), Refusal> {
        let used = ISettlement::nonceUsedCall {
            user: order.user,
            nonce: order.nonce,
        };
        if self
            .reader()
            .view(SETTLEMENT, &used)
            .await
            .map_err(unavailable)?
        {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the order's nonce {} is spent", order.nonce),
            ));
        }
        Ok(())
    }

    /// Refuses to serve model `id` unless the adapter file this node would serve is the one
    /// registered on-chain (`registered`): what answers is what the chain says was trained.
    async fn check_adapter(&self, id: U256, model: &IModels::Model) -> Result<(), Refusal> {
        let registered = model.adapterHash;
        let dir = self.flywheel.adapter_dir(id);
        let path = dir.join(openledger_ml::lora::ADAPTER_WEIGHTS_FILE);
        let shown = path.display().to_string();
        let mut hash = self.served_hash(&path, false, model).await?;
        if let Some(served) = hash
            && served != registered
            && self
                .earlier_artifact(id, model.artifactVersion, served)
                .await?
        {
            // The model was deployed again with a retrained adapter: the one it replaced goes.
            hash = self.served_hash(&path, true, model).await?;
            if hash != Some(registered) {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "model {id} was deployed again with the adapter {registered}, which this \
                         node does not hold and {}: its creator publishes it (openledger model \
                         publish {id} --adapter DIR)",
                        self.nobody_published()
                    ),
                ));
            }
        }
        match hash {
            Some(hash) if hash == registered => Ok(()),
            Some(hash) => Err(Refusal::new(
                StatusCode::CONFLICT,
                format!(
                    "the adapter of model {id} on this node ({shown}) hashes to {hash}, not to the \
                     adapterHash {registered} registered on-chain: it is not served"
                ),
            )),
            None => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this node holds no adapter of model {id} ({shown} is missing) and {} with \
                     its adapterHash {registered}: its creator publishes it (openledger model \
                     publish {id} --adapter DIR)",
                    self.nobody_published()
                ),
            )),
        }
    }

    /// Who was asked for an adapter this node does not hold, for the refusal.
    fn nobody_published(&self) -> String {
        match self.flywheel.adapters.peers() {
            [] => "nobody published one".to_string(),
            peers => format!("nobody published one here nor at {}", peers.join(", ")),
        }
    }

    /// The hash of the adapter weights at `path`, after installing `model`'s registered adapter
    /// there, from the published ones (or a peer's) when none is there (trained in another
    /// folder or on another node) or when told to `replace` it (retrained).
    async fn served_hash(
        &self,
        path: &std::path::Path,
        replace: bool,
        model: &IModels::Model,
    ) -> Result<Option<B256>, Refusal> {
        let path = path.to_path_buf();
        let install = replace || !path.exists();
        let registered = model.adapterHash;
        if install {
            self.flywheel
                .adapters
                .ensure(registered, model.creator)
                .await
                .map_err(unavailable)?;
        }
        let published = self.flywheel.adapters.store.clone();
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().context("the adapter's folder")?;
            if install {
                published.install(registered, dir)?;
            }
            anyhow::Ok(crate::jobs::file_hash(&path).ok())
        })
        .await
        .map_err(|e| unavailable(e.into()))?
        .map_err(unavailable)
    }

    /// Whether `hash` is an artifact version model `id` registered before its `current` one:
    /// the adapter on disk is outdated, not tampered with.
    async fn earlier_artifact(&self, id: U256, current: u64, hash: B256) -> Result<bool, Refusal> {
        // Bounded: a node more versions behind than this is told the adapter does not match.
        for version in (1..current).rev().take(MAX_EARLIER_ARTIFACTS) {
            let call = IModels::getArtifactCall {
                modelId: id,
                version,
            };
            let artifact = self
                .reader()
                .view(MODELS, &call)
                .await
                .map_err(unavailable)?;
            if artifact.adapterHash == hash {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn operator_key(&self, operator: Address) -> bool {
        self.flywheel
            .accounts
            .iter()
            .any(|k| k.address() == operator)
    }

    /// Checks a client-signed order before generation: its signature, model, expiry and nonce,
    /// and that its maximum fee is in escrow.
    async fn check_order(&self, extra: &Value, model_id: U256) -> Result<Payer, Refusal> {
        let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, message);
        let signed = SignedOrder::deserialize(extra)
            .map_err(|e| bad(format!("openledger: not a signed order ({e})")))?;
        let o = signed.order;
        let order = ISettlement::InferenceOrder {
            user: o.user,
            modelId: o.model_id,
            maxFee: o.max_fee,
            nonce: o.nonce,
            expiry: o.expiry.to(),
        };
        if order.modelId != model_id {
            return Err(bad(format!(
                "the order is for model {}, not model {model_id}",
                order.modelId
            )));
        }
        let digest = order.eip712_signing_hash(&openledger_protocol::settlement::domain(
            self.flywheel.chain_id,
        ));
        let signer = Signature::try_from(signed.signature.as_ref())
            .ok()
            .and_then(|s| s.recover_address_from_prehash(&digest).ok());
        if signer != Some(order.user) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!("the order's signature is not {}'s", order.user),
            ));
        }
        let now = self
            .reader()
            .latest_timestamp()
            .await
            .map_err(unavailable)?;
        if order.expiry <= now {
            return Err(bad(format!("the order expired at {}", order.expiry)));
        }
        self.unspent(&order).await?;
        Ok(Payer::Signed(order, signed.signature))
    }

    /// The gradient influence of `text` on model `id`'s adapter, when it carries sketches.
    async fn influence(
        &self,
        id: U256,
        adapter_hash: B256,
        text: String,
    ) -> anyhow::Result<Option<openledger_attribution::Influence>> {
        let adapter = self.flywheel.adapter_dir(id);
        if !adapter
            .join(openledger_attribution::INFLUENCE_FILE)
            .is_file()
        {
            return Ok(None);
        }
        let cached = self
            .influence
            .lock()
            .expect("influence lock")
            .get(&id)
            .filter(|(hash, _)| *hash == adapter_hash)
            .map(|(_, model)| model.clone());
        let model = match cached {
            Some(model) => model,
            None => {
                let base = self.flywheel.base.path().await?;
                let model = tokio::task::spawn_blocking(move || {
                    InfluenceModel::open(&base, &adapter).map(Arc::new)
                })
                .await??;
                self.influence
                    .lock()
                    .expect("influence lock")
                    .insert(id, (adapter_hash, model.clone()));
                model
            }
        };
        Ok(Some(
            tokio::task::spawn_blocking(move || model.attribute(&text)).await??,
        ))
    }
}

impl CompletionHook for Ledger {
    fn admit<'a>(&'a self, call: Call<'a>) -> HookFuture<'a, Box<dyn Admitted>> {
        Box::pin(async move {
            let pending = Ledger::admit(self, call).await?;
            Ok(Box::new(pending) as Box<dyn Admitted>)
        })
    }

    /// The deployed models this node operates whose adapter here is the registered one: the
    /// base model itself is never served alone (nobody would be paid).
    fn servable<'a>(&'a self, ids: Vec<String>) -> HookFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut served = Vec::new();
            for id in ids {
                if let Ok((model_id, info)) = self.deployed_here(&id).await
                    && self.check_adapter(model_id, &info).await.is_ok()
                {
                    served.push(id);
                }
            }
            Ok(served)
        })
    }
}

impl Admitted for Pending {
    fn complete(self: Box<Self>, completion: Completion) -> HookFuture<'static, Value> {
        Box::pin(async move { self.settle(completion).await.map_err(unavailable) })
    }
}

/// How a completion was attributed.
struct Attributed {
    datanet: U256,
    version: u64,
    method: AttributionMethod,
    weights: Vec<Credit>,
    evidence: Value,
}

impl Pending {
    async fn settle(self, c: Completion) -> anyhow::Result<Value> {
        let attributed = self.attribute(&c).await?;
        let receipt = receipt(&c, self.model.artifactVersion, &attributed)?;
        let quote = ISettlement::quoteCall {
            modelId: self.model_id,
            inputTokens: receipt.inputTokens,
            outputTokens: receipt.outputTokens,
        };
        let fee = self.ledger.reader().view(SETTLEMENT, &quote).await?;
        let (order, signature) = match self.payer {
            Payer::Dev(key) => {
                let expiry = self.ledger.reader().latest_timestamp().await? + ORDER_LIFETIME;
                let order = ISettlement::InferenceOrder {
                    user: key.address(),
                    modelId: self.model_id,
                    maxFee: fee,
                    nonce: U256::from_be_bytes(rand::random::<[u8; 32]>()),
                    expiry,
                };
                let domain = openledger_protocol::settlement::domain(self.ledger.flywheel.chain_id);
                let signature = key.sign_hash_sync(&order.eip712_signing_hash(&domain))?;
                (order, Bytes::from(signature.as_bytes().to_vec()))
            }
            Payer::Signed(order, signature) => {
                if fee > order.maxFee {
                    anyhow::bail!(
                        "the fee {fee} is above the order's maxFee {}: nothing was charged",
                        order.maxFee
                    );
                }
                (order, signature)
            }
        };
        let user = order.user;
        let settlement = ISettlement::Settlement {
            order,
            signature,
            receipt,
        };
        // Held now for exactly the fee, until the settler has it on-chain or gives up.
        let receipt = receipt_id(&settlement);
        self.hold.into_settlement(receipt, fee);
        let settled = self
            .ledger
            .settler
            .settle(self.model.operator, settlement)
            .await;
        let (id, tx) = settled.inspect_err(|_| self.ledger.holds.release(receipt))?;
        Ok(json!({
            "modelId": self.model_id.to_string(),
            "user": user,
            "fee": fee.to_string(),
            "artifactVersion": self.model.artifactVersion,
            "receiptId": id,
            "settlementTx": tx,
            "attribution": attributed.evidence,
        }))
    }

    /// Attributes the completion: span attribution against each of the model's datanet
    /// versions in turn, else the adapter's gradient influence, else nothing.
    async fn attribute(&self, c: &Completion) -> anyhow::Result<Attributed> {
        let versions = self
            .model
            .datanetIds
            .iter()
            .copied()
            .zip(self.model.datanetVersions.iter().copied());
        let mut first = None;
        let mut errors = Vec::new();
        for (datanet, version) in versions {
            first.get_or_insert((datanet, version));
            match self.span(datanet, version, c).await {
                Ok((attribution, spans)) if attribution.is_attributed() => {
                    return Ok(Attributed {
                        datanet,
                        version,
                        method: AttributionMethod::Span,
                        weights: attribution.weights.clone(),
                        evidence: json!({
                            "method": "span", "datanetId": datanet.to_string(),
                            "datanetVersion": version, "weights": attribution.weights,
                            "spans": spans,
                        }),
                    });
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("datanet {datanet}@{version}: {e:#}")),
            }
        }
        let (datanet, version) = first.context("the model names no datanet")?;
        let text = format!("{}{}", c.prompt, c.output);
        let influence = self
            .ledger
            .influence(self.model_id, self.model.adapterHash, text)
            .await
            .unwrap_or_else(|e| {
                errors.push(format!("gradient influence: {e:#}"));
                None
            });
        // Sketches travel with a published adapter: on another chain, or beside a datanet
        // version other than the one registered, they may name contributions the receipt cannot
        // be settled with. Such an answer is attributed to nobody rather than served unpaid.
        let influence = match influence {
            Some(i) => match self
                .ledger
                .outside_version(datanet, version, &i.weights)
                .await
            {
                Some(outside) => {
                    errors.push(format!("gradient influence: {outside}"));
                    None
                }
                None => Some(i),
            },
            None => None,
        };
        let (method, weights, evidence) = match influence {
            Some(i) if !i.weights.is_empty() => (
                AttributionMethod::Gradient,
                i.weights.clone(),
                json!({"method": "gradient", "weights": i.weights, "topRows": i.top_rows}),
            ),
            _ => (
                AttributionMethod::None,
                Vec::new(),
                json!({"method": "none", "weights": []}),
            ),
        };
        let mut evidence = evidence;
        evidence["datanetId"] = json!(datanet.to_string());
        evidence["datanetVersion"] = json!(version);
        if !errors.is_empty() {
            evidence["errors"] = json!(errors);
        }
        Ok(Attributed {
            datanet,
            version,
            method,
            weights,
            evidence,
        })
    }

    /// The span attribution against `datanet` at `version`, with the text of each span that
    /// counted.
    async fn span(
        &self,
        datanet: U256,
        version: u64,
        c: &Completion,
    ) -> anyhow::Result<(Attribution, Vec<Value>)> {
        let indexes = self.ledger.flywheel.indexes.clone();
        let (prompt, output) = (c.prompt.clone(), c.output.clone());
        tokio::task::spawn_blocking(move || {
            let (attribution, tokens) = indexes.attribute(datanet, version, &prompt, &output)?;
            let spans = attribution
                .spans
                .iter()
                .filter(|s| s.counted)
                .map(|s| {
                    let text =
                        indexes.decode(datanet, version, &tokens[s.start..s.start + s.len])?;
                    Ok(json!({"text": text, "rows": s.rows, "occurrences": s.occurrences}))
                })
                .collect::<anyhow::Result<_>>()?;
            Ok((attribution, spans))
        })
        .await?
    }
}

/// The receipt of a completion of artifact version `artifact`, attributed as `a`: token counts,
/// hashes, and the weights.
fn receipt(
    c: &Completion,
    artifact: u64,
    a: &Attributed,
) -> anyhow::Result<ISettlement::InferenceReceipt> {
    inference_receipt(
        (c.prompt_tokens as u64, c.completion_tokens as u64),
        (&c.prompt, &c.output),
        (artifact, a.datanet, a.version),
        a.method,
        &a.weights,
    )
}

/// A receipt: token counts, the prompt's and output's hashes, the artifact version that served
/// it with the datanet version that artifact learned from, and the attribution `method`'s
/// weights (which must name contribution ids).
pub fn inference_receipt(
    (input_tokens, output_tokens): (u64, u64),
    (prompt, output): (&str, &str),
    (artifact, datanet, version): (u64, U256, u64),
    method: AttributionMethod,
    weights: &[Credit],
) -> anyhow::Result<ISettlement::InferenceReceipt> {
    let ids = weights
        .iter()
        .map(|c| c.contribution.parse::<U256>())
        .collect::<Result<Vec<_>, _>>()
        .context("a credited contribution id is not a number")?;
    Ok(ISettlement::InferenceReceipt {
        inputTokens: input_tokens,
        outputTokens: output_tokens,
        promptHash: keccak256(prompt.as_bytes()),
        outputHash: keccak256(output.as_bytes()),
        artifactVersion: artifact,
        datanetId: datanet,
        datanetVersion: version,
        method: if ids.is_empty() {
            AttributionMethod::None
        } else {
            method
        }
        .into(),
        contributionIds: ids,
        weights: weights.iter().map(|c| c.ppm).collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::http::HeaderMap;
    use openledger_primitives::OPEN;
    use openledger_serve::hook::Refusal;

    use super::*;
    use crate::testing::TestChain;

    /// The ledger of a node holding every dev account's key, in `dir`.
    fn ledger(tc: &TestChain, dir: &Path) -> Ledger {
        let flywheel = tc.flywheel(dir, "http://127.0.0.1:9");
        let holds = Arc::new(Holds::default());
        let settler =
            Settler::start(&tc.client, &tc.keys, dir.join("settlements"), holds.clone()).unwrap();
        Ledger::new(flywheel, settler, holds)
    }

    fn call<'a>(model: &'a str, headers: &'a HeaderMap) -> Call<'a> {
        Call {
            model,
            headers,
            extra: None,
            prompt_tokens: 10,
            max_tokens: 5,
        }
    }

    fn key(account: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer dev-{account}").parse().unwrap();
        headers.insert(axum::http::header::AUTHORIZATION, value);
        headers
    }

    async fn refused(ledger: &Ledger, model: &str, headers: &HeaderMap) -> Refusal {
        match CompletionHook::admit(ledger, call(model, headers)).await {
            Ok(_) => panic!("{model} was admitted"),
            Err(refusal) => refusal,
        }
    }

    #[tokio::test]
    async fn weights_naming_contributions_outside_the_version_are_not_settled() {
        let tc = TestChain::start(3);
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger(&tc, dir.path());
        let (datanet, inside) = tc.datanet().await;
        let (_, elsewhere) = tc.datanet().await;
        let credit = |contribution: String| Credit {
            contribution,
            ppm: 1_000_000,
        };
        let weights = [credit(inside.to_string())];
        assert_eq!(ledger.outside_version(datanet, 1, &weights).await, None);
        for outside in [elsewhere.to_string(), "99".into(), "x".into()] {
            let weights = [credit(inside.to_string()), credit(outside.clone())];
            let why = ledger.outside_version(datanet, 1, &weights).await;
            assert!(
                why.as_ref().is_some_and(|w| w.contains(&outside)),
                "{why:?}"
            );
        }
    }

    #[test]
    fn an_order_s_numbers_may_be_written_as_strings() {
        for expiry in [json!(123), json!("123"), json!("0x7b")] {
            let order = json!({"user": Address::ZERO, "modelId": "1", "maxFee": 10, "nonce": "0x2",
                               "expiry": expiry});
            let parsed: OrderJson = serde_json::from_value(order).unwrap();
            assert_eq!(parsed.expiry.to::<u64>(), 123);
        }
    }

    #[tokio::test]
    async fn a_paid_completion_is_settled_on_chain_and_an_unpaid_one_refused() {
        paid_and_unpaid(TestChain::start(6)).await;
    }

    /// The same, with the services apart from the node: every call over HTTP JSON-RPC.
    #[tokio::test]
    async fn the_ledger_works_the_same_over_json_rpc() {
        paid_and_unpaid(TestChain::over_http(6).await).await;
    }

    async fn paid_and_unpaid(tc: TestChain) {
        let dir = tempfile::tempdir().unwrap();
        let (datanet, _) = tc.datanet().await;
        let weights = b"adapter weights".to_vec();
        let model = tc.deployed_model(datanet, keccak256(&weights)).await;
        let served = dir.path().join(format!("adapters/model-{model}"));
        std::fs::create_dir_all(&served).unwrap();
        std::fs::write(
            served.join(openledger_ml::lora::ADAPTER_WEIGHTS_FILE),
            &weights,
        )
        .unwrap();
        let unserved = tc.approved_model(datanet).await;
        tc.deposit(4, OPEN).await;
        let ledger = ledger(&tc, dir.path());
        let name = format!("model-{model}");

        let status = |r: Refusal| r.status;
        assert_eq!(status(refused(&ledger, "model-99", &key(4)).await), 404);
        assert_eq!(
            status(refused(&ledger, &format!("model-{unserved}"), &key(4)).await),
            403
        );
        assert_eq!(
            status(refused(&ledger, &name, &HeaderMap::new()).await),
            401
        );
        // Account 5 holds no escrow: nothing is generated for it.
        let unpaid = refused(&ledger, &name, &key(5)).await;
        assert_eq!(unpaid.status, 402, "{}", unpaid.message);

        let escrow = |account: usize| {
            let call = ISettlement::balanceOfCall {
                account: tc.keys[account].address(),
            };
            let client = tc.client.clone();
            async move { client.view(SETTLEMENT, &call).await.unwrap() }
        };
        let before = escrow(4).await;
        let admitted = CompletionHook::admit(&ledger, call(&name, &key(4)))
            .await
            .unwrap_or_else(|r| panic!("refused: {}", r.message));
        let completion = Completion {
            prompt: "Q: hi A:".into(),
            output: " hello".into(),
            prompt_tokens: 10,
            completion_tokens: 3,
        };
        let record = admitted
            .complete(completion)
            .await
            .unwrap_or_else(|r| panic!("not settled: {}", r.message));
        let tx: B256 = serde_json::from_value(record["settlementTx"].clone()).unwrap();
        tc.client.wait(tx).await.unwrap();
        let quote = ISettlement::quoteCall {
            modelId: model,
            inputTokens: 10,
            outputTokens: 3,
        };
        let fee = tc.client.view(SETTLEMENT, &quote).await.unwrap();
        assert!(fee > U256::ZERO);
        assert_eq!(before - escrow(4).await, fee);
        assert_eq!(record["fee"], fee.to_string());
        assert_eq!(record["artifactVersion"], 1);
        // No index of the datanet's version here: attributed to nobody, paid to its owner.
        assert_eq!(record["attribution"]["method"], "none");

        // Escrow its payer is taking out pays for nothing new, though it is still there.
        let payer = tc.client.with_signer(tc.keys[4].clone());
        let unlock = ISettlement::unlockCall {
            amount: escrow(4).await,
        };
        payer.send(SETTLEMENT, &unlock, U256::ZERO).await.unwrap();
        let unlocking = refused(&ledger, &name, &key(4)).await;
        assert_eq!(unlocking.status, 402, "{}", unlocking.message);
        assert!(
            unlocking.message.contains("not unlocking"),
            "{}",
            unlocking.message
        );
    }
}
