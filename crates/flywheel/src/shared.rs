//! What the services share: the chain they are clients of, the base model, the dev accounts'
//! keys, the data directory and the node's terms, and how their HTTP handlers answer errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use axum::{
    Json,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::sync::OnceCell;

use crate::adapters::Adapters;
use crate::client::Client;
use crate::index::registry::IndexRegistry;

/// What this node charges for training, and the dev account it is paid to.
#[derive(Debug, Clone)]
pub struct TrainingTerms {
    /// Wei per 1,000 training tokens (rows' tokens times epochs); zero trains for free.
    pub price_per_1k: U256,
    /// The dev account that holds and receives the fees.
    pub trainer: usize,
}

/// The base model the services use: the one given (converted first if it is a GGUF file), or
/// the dev base model, made ready in the background from the start (so that the node starts at
/// once, and the first request does not wait for it unannounced).
pub struct BaseModel {
    given: Option<PathBuf>,
    resolve: fn(Option<&Path>) -> anyhow::Result<PathBuf>,
    resolved: OnceCell<PathBuf>,
    building: AtomicBool,
}

impl BaseModel {
    /// The checkpoint directory `resolve` makes of the base `given`, or of none (the dev base
    /// model); the binary's ModelFactory knows how.
    pub fn new(
        given: Option<PathBuf>,
        resolve: fn(Option<&Path>) -> anyhow::Result<PathBuf>,
    ) -> Self {
        Self {
            given,
            resolve,
            resolved: OnceCell::new(),
            building: AtomicBool::new(false),
        }
    }

    /// Its checkpoint directory, building the dev base model the first time it is needed.
    pub async fn path(&self) -> anyhow::Result<PathBuf> {
        let path = self
            .resolved
            .get_or_try_init(|| async {
                let _building = Building::start(&self.building);
                let (given, resolve) = (self.given.clone(), self.resolve);
                tokio::task::spawn_blocking(move || resolve(given.as_deref())).await?
            })
            .await?;
        Ok(path.clone())
    }

    /// Whether the base is being built right now, so a request can be told to come back.
    pub fn is_building(&self) -> bool {
        !self.resolved.initialized() && self.building.load(Ordering::Relaxed)
    }
}

/// Marks the base model as being built for as long as it lives, however the build ends (done,
/// failed, or its caller gone).
struct Building<'a>(&'a AtomicBool);

impl<'a> Building<'a> {
    fn start(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Relaxed);
        Self(flag)
    }
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// What the services share.
pub struct Flywheel {
    /// The chain, which the services are clients of (in-process in `openledger dev`).
    pub chain: Client,
    /// The node's content API, where datanet rows are read and adapters published.
    pub api_url: String,
    /// What the services send the content API as `Authorization: Bearer` to read any file's
    /// rows, a private datanet's included (the indexer indexes every version).
    pub api_token: String,
    /// The base model adapters are trained on and served over.
    pub base: BaseModel,
    /// The span indexes of datanet versions.
    pub indexes: Arc<IndexRegistry>,
    /// Keys of the dev accounts API keys stand for.
    pub accounts: Vec<PrivateKeySigner>,
    /// The chain's id, which orders are signed for.
    pub chain_id: u64,
    /// The node's data directory: jobs, adapters and settlements are kept under it.
    pub datadir: PathBuf,
    /// What the node charges for training jobs, and the account it is paid to.
    pub training: TrainingTerms,
    /// Published adapters, from which a deployed model's adapter is installed when this node
    /// does not hold it (it was trained elsewhere), and the peers it is fetched from when it was
    /// published elsewhere.
    pub adapters: Adapters,
}

impl Flywheel {
    /// Where trained adapters are kept, one `model-<id>` directory each.
    pub(crate) fn adapters_dir(&self) -> PathBuf {
        self.datadir.join("adapters")
    }

    /// The adapter directory of model `id`.
    pub(crate) fn adapter_dir(&self, id: U256) -> PathBuf {
        self.adapters_dir().join(format!("model-{id}"))
    }

    /// The index of the dev account an API key stands for.
    pub(crate) fn account(&self, headers: &HeaderMap) -> Result<usize, ApiError> {
        let unauthorized = |m: String| ApiError(StatusCode::UNAUTHORIZED, m);
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::signing::bearer_token)
            .ok_or_else(|| {
                unauthorized("an API key is needed: Authorization: Bearer dev-<N>".into())
            })?;
        crate::signing::dev_key_index(key, self.accounts.len()).ok_or_else(|| {
            unauthorized(format!(
                "unknown API key {key:?}: dev-0 to dev-{} stand for the dev accounts",
                self.accounts.len().saturating_sub(1)
            ))
        })
    }
}

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, message.into())
    }
}
