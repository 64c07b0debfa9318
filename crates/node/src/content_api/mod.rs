//! The content API: uploads of datanet files into the content store, and reads of stored
//! content, over HTTP next to the JSON-RPC server.
//!
//! `POST /datanets/{id}/files` (multipart, one `file` field) splits the file into rows, stores
//! them and answers what to pass to `IDatanets.contribute`; `GET /contributions/{hash}` and
//! `GET /contributions/{hash}/rows?offset=&limit=` read stored content back. Refused uploads get
//! a 4xx with `{"error": "..."}` and store nothing.

use std::{str::FromStr, sync::Arc};

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Multipart, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use openledger_chain::{CallError, Chain};
use openledger_content::{ContentError, ContentStore, Format, Manifest};
use openledger_primitives::addresses;
use openledger_protocol::abi::IDatanets;
use serde::{Deserialize, Serialize};

/// Room for the multipart framing around the file itself.
const MULTIPART_OVERHEAD: usize = 64 * 1024;
/// Rows returned per page at most.
const MAX_PAGE: usize = 1_000;

#[derive(Clone)]
struct Api {
    store: ContentStore,
    chain: Arc<Chain>,
}

/// The content API's routes.
pub fn router(store: ContentStore, chain: Arc<Chain>) -> Router {
    let limit = usize::try_from(store.max_file_bytes())
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD);
    Router::new()
        .route("/datanets/{id}/files", post(upload))
        .route("/contributions/{hash}", get(manifest))
        .route("/contributions/{hash}/rows", get(rows))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Api { store, chain })
}

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ContentError> for ApiError {
    fn from(e: ContentError) -> Self {
        let status = match &e {
            ContentError::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ContentError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ContentError::Rows(_) => StatusCode::BAD_REQUEST,
            ContentError::NotFound(_) => StatusCode::NOT_FOUND,
            ContentError::Corrupt(..) | ContentError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

/// What an upload answers: the arguments of `IDatanets.contribute` and how the file was read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Uploaded {
    datanet_id: String,
    content_hash: B256,
    rows: u64,
    size: u64,
    file_name: String,
    format: Format,
}

/// The query of an upload: who will contribute the file, to check their quota too.
#[derive(Debug, Deserialize)]
struct UploadQuery {
    contributor: Option<Address>,
}

async fn upload(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(query): Query<UploadQuery>,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let datanet_id = U256::from_str(&id).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid datanet id {id:?}"),
        )
    })?;
    let contributor = query.contributor.unwrap_or_default();
    let left = quota_left(&api.chain, datanet_id, contributor)?;
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        ApiError(
            e.status(),
            format!("bad multipart upload: {}", e.body_text()),
        )
    };
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            continue;
        }
        let file_name = field
            .file_name()
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    "the file field has no file name".into(),
                )
            })?
            .to_string();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        if bytes.len() as u64 > left.remainingBytes || left.remainingFiles == 0 {
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "over the daily quota: {} bytes and {} files left today for datanet \
                     {datanet_id}{}, and this file is {} bytes",
                    left.remainingBytes,
                    left.remainingFiles,
                    query
                        .contributor
                        .map(|c| format!(" and contributor {c}"))
                        .unwrap_or_default(),
                    bytes.len()
                ),
            ));
        }
        let store = api.store.clone();
        let manifest = tokio::task::spawn_blocking(move || store.put(&file_name, &bytes))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        let uploaded = Uploaded {
            datanet_id: datanet_id.to_string(),
            content_hash: manifest.content_hash,
            rows: manifest.rows,
            size: manifest.size,
            file_name: manifest.file_name,
            format: manifest.format,
        };
        return Ok((StatusCode::CREATED, Json(uploaded)));
    }
    Err(ApiError(
        StatusCode::BAD_REQUEST,
        "the upload has no `file` field".into(),
    ))
}

/// What the datanet (and the contributor, unless zero) may still receive today, from the
/// Datanets module at the head; a 404 if the datanet does not exist.
fn quota_left(
    chain: &Chain,
    datanet_id: U256,
    contributor: Address,
) -> Result<IDatanets::quotaLeftReturn, ApiError> {
    let call = IDatanets::quotaLeftCall {
        datanetId: datanet_id,
        contributor,
    };
    match chain.view(addresses::DATANETS, call.abi_encode().into()) {
        Ok(output) => IDatanets::quotaLeftCall::abi_decode_returns(&output)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        // The view reverts only for an unknown datanet.
        Err(CallError::Invalid(_)) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("datanet {datanet_id} does not exist"),
        )),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

fn parse_hash(hash: &str) -> Result<B256, ApiError> {
    B256::from_str(hash).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid content hash {hash:?}: expected 32 bytes of hex"),
        )
    })
}

async fn manifest(
    State(api): State<Api>,
    Path(hash): Path<String>,
) -> Result<Json<Manifest>, ApiError> {
    let hash = parse_hash(&hash)?;
    Ok(Json(api.store.manifest(hash)?))
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn rows(
    State(api): State<Api>,
    Path(hash): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let hash = parse_hash(&hash)?;
    let store = api.store.clone();
    let rows = tokio::task::spawn_blocking(move || store.rows(hash))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let limit = page.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let total = rows.len();
    let page: Vec<String> = rows.into_iter().skip(page.offset).take(limit).collect();
    Ok(Json(serde_json::json!({
        "contentHash": hash,
        "total": total,
        "rows": page,
    })))
}
