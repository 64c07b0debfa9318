//! Adapters by the hash the chain registers for them, so that a deployed model is served by any
//! node, wherever it was trained:
//!
//! - `PUT /models/{id}/adapter` (multipart; one part per file, named by its file name:
//!   `adapter_model.safetensors`, `adapter_config.json`, optionally `metrics.json`) publishes
//!   model `id`'s adapter, signed by the model's creator (see [`openledger_flywheel::signing::adapter_message`]:
//!   the chain binds the weights, the signature the config that says how to apply them); weights
//!   that do not hash to the model's registered `adapterHash` are refused. Publishing again
//!   replaces the config, metrics and sketches; only the account that first published those
//!   weights may (another model can register the same ones: 409).
//! - `GET /adapters/{hash}` lists a published adapter's files; `GET /adapters/{hash}/{file}`
//!   reads one.

use std::time::Duration;

use alloy_primitives::U256;
use alloy_primitives::keccak256;
use alloy_sol_types::SolCall;
use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, Multipart, Path, State, multipart::MultipartRejection,
        rejection::PathRejection,
    },
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, put},
};
use openledger_chain::CallError;
use openledger_content::adapters::{
    ADAPTER_FILES, CONFIG_FILE, MAX_ADAPTER_FILE_BYTES, WEIGHTS_FILE,
};
use openledger_flywheel::{ledger::MAX_EARLIER_ARTIFACTS, signing::adapter_message};
use openledger_primitives::addresses;
use openledger_protocol::abi::IModels;
use serde_json::{Value, json};
use tower::limit::ConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::{ApiError, ContentApi, auth::credential, internal, parse_hash};

/// Adapter uploads handled at once: each holds its files in memory.
const CONCURRENT_PUBLISHES: usize = 2;
/// How long a publish may take, its body included.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(300);

/// The adapter routes, each with its own body limit (not the datanet files' one).
pub fn routes() -> Router<ContentApi> {
    let body_limit = (ADAPTER_FILES.len() as u64 * MAX_ADAPTER_FILE_BYTES + (64 << 10)) as usize;
    let publishing = Router::new()
        .route("/models/{id}/adapter", put(publish))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(ConcurrencyLimitLayer::new(CONCURRENT_PUBLISHES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            PUBLISH_TIMEOUT,
        ));
    Router::new()
        .merge(publishing)
        .route("/adapters/{hash}", get(show))
        .route("/adapters/{hash}/{file}", get(file))
}

async fn publish(
    State(api): State<ContentApi>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Path(id) = path?;
    let model_id: U256 = id
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("invalid model id {id:?}")))?;
    let model = registered_model(&api, model_id)?;
    let credential = credential(
        &headers,
        &api.dev_accounts,
        "OpenLedger adapter <keccak256 of adapter_model.safetensors> with config <keccak256 of \
         adapter_config.json> for model <id> on chain <chain id>",
    )?;
    let files = read_files(multipart?).await?;
    let config = files
        .iter()
        .find(|(name, _)| name == CONFIG_FILE)
        .map(|(_, bytes)| bytes)
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("an adapter needs its {CONFIG_FILE}"),
            )
        })?;
    serde_json::from_slice::<serde_json::Map<String, Value>>(config).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{CONFIG_FILE} is not a JSON object: {e}"),
        )
    })?;
    // Signed over the weights sent: weights that are not the registered ones are then named
    // as such (400), not taken for another signer.
    let weights = files
        .iter()
        .find(|(name, _)| name == WEIGHTS_FILE)
        .map(|(_, bytes)| keccak256(bytes))
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("an adapter needs its {WEIGHTS_FILE}"),
            )
        })?;
    // Any registered version may be published: a retrained model's newest one is fetched by
    // the nodes that serve it once it is deployed again.
    let registered = if is_artifact(&api, model_id, &model, weights)? {
        weights
    } else {
        model.adapterHash
    };
    let message = adapter_message(api.chain.chain_id(), model_id, weights, keccak256(config));
    let signer = credential.signer_of(&message)?;
    if signer != model.creator {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{signer} is not model {model_id}'s creator {}: only the creator publishes its \
                 adapter",
                model.creator
            ),
        ));
    }
    let store = api.adapters.clone();
    let listed = tokio::task::spawn_blocking(move || {
        store.put(registered, &files, signer)?;
        store.files(registered)
    })
    .await
    .map_err(internal)??;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"modelId": model_id.to_string(), "adapterHash": registered,
                    "files": listing(&listed)}),
        ),
    ))
}

/// Model `model_id`, if it registered an adapter; or why it cannot be published.
fn registered_model(api: &ContentApi, model_id: U256) -> Result<IModels::Model, ApiError> {
    let call = IModels::getModelCall { modelId: model_id };
    let model = match api.chain.view(addresses::MODELS, call.abi_encode().into()) {
        Ok(output) => IModels::getModelCall::abi_decode_returns(&output).map_err(internal)?,
        Err(CallError::Invalid(_) | CallError::Reverted(_)) => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("model {model_id} does not exist"),
            ));
        }
        Err(e) => return Err(internal(e)),
    };
    if model.artifactCount == 0 {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "model {model_id} has no registered adapter yet: its creator registers one \
                 (registerArtifact) before publishing it"
            ),
        ));
    }
    Ok(model)
}

/// Whether `weights` is the adapter hash of one of `model`'s most recent artifact versions
/// (bounded: older ones are no longer published).
fn is_artifact(
    api: &ContentApi,
    model_id: U256,
    model: &IModels::Model,
    weights: alloy_primitives::B256,
) -> Result<bool, ApiError> {
    if model.adapterHash == weights {
        return Ok(true);
    }
    for version in (1..=model.artifactCount).rev().take(MAX_EARLIER_ARTIFACTS) {
        let call = IModels::getArtifactCall {
            modelId: model_id,
            version,
        };
        let output = api
            .chain
            .view(addresses::MODELS, call.abi_encode().into())
            .map_err(internal)?;
        let artifact = IModels::getArtifactCall::abi_decode_returns(&output).map_err(internal)?;
        if artifact.adapterHash == weights {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The adapter files of a multipart body: each part named by its file name (or field name).
async fn read_files(mut multipart: Multipart) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError(
            e.status(),
            format!("bad multipart upload: {}", e.body_text()),
        )
    };
    let mut files = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field
            .file_name()
            .or(field.name())
            .unwrap_or_default()
            .to_string();
        if !ADAPTER_FILES.contains(&name.as_str()) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "unexpected file {name:?}: an adapter is published as {}",
                    ADAPTER_FILES.join(", ")
                ),
            ));
        }
        if files.iter().any(|(n, _)| *n == name) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("{name} is sent twice"),
            ));
        }
        files.push((name, field.bytes().await.map_err(bad)?.to_vec()));
    }
    Ok(files)
}

fn listing(files: &[(&str, u64)]) -> Vec<Value> {
    files
        .iter()
        .map(|(name, size)| json!({"name": name, "size": size}))
        .collect()
}

async fn show(
    State(api): State<ContentApi>,
    Path(hash): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let hash = parse_hash(&hash)?;
    let files = api.adapters.files(hash)?;
    Ok(Json(json!({"adapterHash": hash, "files": listing(&files)})))
}

async fn file(
    State(api): State<ContentApi>,
    Path((hash, name)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let hash = parse_hash(&hash)?;
    let name = ADAPTER_FILES
        .into_iter()
        .find(|f| *f == name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("an adapter has no {name:?}")))?;
    let dir = api
        .adapters
        .get(hash)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no adapter {hash}")))?;
    let path = dir.join(name);
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(internal)?
        .map_err(|_| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("adapter {hash} has no {name}"),
            )
        })?;
    let kind = if name.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, kind)], bytes))
}
