//! The content API: uploads of datanet files into the content store, and reads of stored
//! content, over HTTP next to the JSON-RPC server.
//!
//! `POST /datanets/{id}/files` (multipart, one `file` field) takes a file from an account (see
//! [`auth`]) for a published datanet it may contribute to, within its daily quotas, splits it into
//! rows, stores them and answers what to pass to `IDatanets.contribute`; the upload counts against
//! the quotas at once and is deleted if nobody contributes it within a day ([`keeper`]).
//! `GET /contributions/{hash}` and `GET /contributions/{hash}/rows?offset=&limit=` read stored
//! content back, a page at a time. Trained adapters are published and read by the hash the chain
//! registers ([`adapters`]). Refused requests get a 4xx with `{"error": "..."}` and store
//! nothing.

pub mod adapters;
pub mod auth;
pub mod keeper;
mod reading;

use std::{str::FromStr, sync::Arc};

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, Multipart, Path, Query, State,
        multipart::MultipartRejection,
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use openledger_chain::{CallError, Chain};
use openledger_content::{
    AdapterStore, ContentError, ContentStore, Format, Manifest, PendingUploads, Upload,
};
use openledger_primitives::addresses;
use openledger_protocol::abi::IDatanets;
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;

/// Room for the multipart framing around the file itself.
const MULTIPART_OVERHEAD: usize = 64 * 1024;
/// Rows returned per page at most.
const MAX_PAGE: usize = 1_000;
/// How long an upload may take, its body included: a client trickling a body cannot hold one of
/// the port's connections for longer.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Seconds in a quota day (quotas reset at midnight UTC, by the chain's clock).
const DAY: u64 = 24 * 60 * 60;

/// What the content API serves from.
#[derive(Clone)]
pub struct ContentApi {
    /// The content store.
    pub store: ContentStore,
    /// Published adapters, by registered hash.
    pub adapters: AdapterStore,
    /// The chain, for datanets, curators and quotas.
    pub chain: Arc<Chain>,
    /// Uploads not yet contributed.
    pub pending: Arc<PendingUploads>,
    /// The accounts `Authorization: Bearer dev-<N>` stands for (none off a dev chain).
    pub dev_accounts: Vec<Address>,
    /// What the node's own services send as `Authorization: Bearer` to read any file's rows
    /// (the indexer indexes private datanets too): random, made at each start.
    pub node_token: String,
}

/// The content API's routes.
pub fn router(api: ContentApi) -> Router {
    let limit = usize::try_from(api.store.max_file_bytes())
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD);
    Router::new()
        .route(
            "/datanets/{id}/files",
            post(upload).layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                UPLOAD_TIMEOUT,
            )),
        )
        .route("/contributions/{hash}", get(manifest))
        .route("/contributions/{hash}/rows", get(rows))
        .layer(DefaultBodyLimit::max(limit))
        .merge(adapters::routes())
        .with_state(api)
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
            ContentError::Rows(_) | ContentError::Invalid(_) => StatusCode::BAD_REQUEST,
            ContentError::NotFound(_) => StatusCode::NOT_FOUND,
            ContentError::Taken(..) => StatusCode::CONFLICT,
            ContentError::Corrupt(..) | ContentError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(e: MultipartRejection) -> Self {
        Self(
            e.status(),
            format!("bad multipart upload: {}", e.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self(StatusCode::BAD_REQUEST, e.body_text())
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// What an upload answers: the arguments of `IDatanets.contribute`, how the file was read, who
/// it counts against and until when it waits for its contribution.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Uploaded {
    datanet_id: String,
    content_hash: B256,
    rows: u64,
    size: u64,
    file_name: String,
    format: Format,
    /// Checksummed, as wallets show it.
    uploader: String,
    expires_at: u64,
}

/// The query of an upload: the account that will contribute the file, which must be the one
/// the upload is from.
#[derive(Debug, Deserialize)]
struct UploadQuery {
    contributor: Option<Address>,
}

/// A file read from a multipart upload.
struct FilePart {
    name: String,
    bytes: axum::body::Bytes,
}

async fn read_file(mut multipart: Multipart) -> Result<FilePart, ApiError> {
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
        let name = field
            .file_name()
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    "the file field has no file name".into(),
                )
            })?
            .to_string();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        return Ok(FilePart { name, bytes });
    }
    Err(ApiError(
        StatusCode::BAD_REQUEST,
        "the upload has no `file` field".into(),
    ))
}

async fn upload(
    State(api): State<ContentApi>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let Path(id) = path?;
    let Query(query) = query?;
    let datanet_id = U256::from_str(&id).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid datanet id {id:?}"),
        )
    })?;
    let credential = auth::credential(
        &headers,
        &api.dev_accounts,
        "OpenLedger upload of file <keccak256 of the file> named <file name> to datanet <id> \
         on chain <chain id>",
    )?;
    let file = read_file(multipart?).await?;
    let chain_id = api.chain.chain_id();
    let uploader = credential.uploader(chain_id, datanet_id, &file.name, &file.bytes)?;
    if let Some(contributor) = query.contributor.filter(|c| *c != uploader) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("the upload is from {uploader}, not from the contributor {contributor}"),
        ));
    }
    may_upload(&api.chain, datanet_id, uploader)?;
    can_pay_to_contribute(&api.chain, uploader)?;
    let now = api.chain.now();
    let store = api.clone();
    // The quota check, the write and the ledger entry are one step under the ledger's gate:
    // parallel uploads cannot all pass the same check, and the keeper cannot delete content
    // between its write and its entry.
    let manifest = tokio::task::spawn_blocking(move || {
        let _gate = store.pending.exclusive();
        check_quota(&store, datanet_id, uploader, now, file.bytes.len() as u64)?;
        let manifest = store.store.put(&file.name, &file.bytes)?;
        let upload = Upload {
            content_hash: manifest.content_hash,
            uploader,
            datanet: datanet_id,
            size: manifest.size,
            stored_at: now,
        };
        store.pending.add(upload).map_err(internal)?;
        Ok::<_, ApiError>(manifest)
    })
    .await
    .map_err(internal)??;
    let uploaded = Uploaded {
        datanet_id: datanet_id.to_string(),
        content_hash: manifest.content_hash,
        rows: manifest.rows,
        size: manifest.size,
        file_name: manifest.file_name,
        format: manifest.format,
        uploader: uploader.to_checksum(None),
        expires_at: now + keeper::UNCONTRIBUTED_TTL_SECS,
    };
    Ok((StatusCode::CREATED, Json(uploaded)))
}

/// Calls a view of the Datanets module; a revert means the datanet does not exist (404).
fn datanets_view<C: SolCall>(
    chain: &Chain,
    datanet_id: U256,
    call: C,
) -> Result<C::Return, ApiError> {
    match chain.view(addresses::DATANETS, call.abi_encode().into()) {
        Ok(output) => C::abi_decode_returns(&output).map_err(internal),
        Err(CallError::Invalid(_) | CallError::Reverted(_)) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("datanet {datanet_id} does not exist"),
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Refuses an upload the chain would refuse to take as a contribution: to a draft datanet, or
/// to a private one from an account not allowed to contribute.
fn may_upload(chain: &Chain, datanet_id: U256, uploader: Address) -> Result<(), ApiError> {
    let datanet = datanets_view(
        chain,
        datanet_id,
        IDatanets::getDatanetCall {
            datanetId: datanet_id,
        },
    )?;
    if !datanet.published {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "datanet {datanet_id} is a draft: its owner must publish it before it takes files"
            ),
        ));
    }
    let allowed = datanet.isPublic
        || datanet.owner == uploader
        || datanets_view(
            chain,
            datanet_id,
            IDatanets::isCuratorCall {
                datanetId: datanet_id,
                account: uploader,
            },
        )?
        || datanets_view(
            chain,
            datanet_id,
            IDatanets::isContributorCall {
                datanetId: datanet_id,
                account: uploader,
            },
        )?;
    if !allowed {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "datanet {datanet_id} is private and {uploader} is not on its contributors' list \
                 (its owner or a curator adds accounts with setContributor)"
            ),
        ));
    }
    Ok(())
}

/// Gas a `contribute` call takes at most, with room to spare.
const CONTRIBUTE_GAS: u64 = 300_000;

/// Refuses an upload from an account that could not pay the gas to contribute it: such an
/// upload can only take quota and disk from those who can (any key signs for free).
fn can_pay_to_contribute(chain: &Chain, uploader: Address) -> Result<(), ApiError> {
    let head = chain.head().header.number;
    let balance = chain.balance_at(&uploader, head).map_err(internal)?;
    let needed = U256::from(CONTRIBUTE_GAS) * U256::from(chain.next_base_fee());
    if balance < needed {
        return Err(ApiError(
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "{uploader} holds {balance} wei, under the {needed} wei of gas a contribution \
                 costs now: only an account that can contribute a file may upload it (a signature \
                 made for another file or datanet recovers another account)"
            ),
        ));
    }
    Ok(())
}

/// Refuses a file over what the datanet and the uploader may still receive today: the chain's
/// quotas, less the uploads stored today and not yet contributed.
fn check_quota(
    api: &ContentApi,
    datanet_id: U256,
    uploader: Address,
    now: u64,
    size: u64,
) -> Result<(), ApiError> {
    keeper::apply_contributions(&api.chain, &api.pending).map_err(internal)?;
    let left = datanets_view(
        &api.chain,
        datanet_id,
        IDatanets::quotaLeftCall {
            datanetId: datanet_id,
            contributor: uploader,
        },
    )?;
    // The chain's answer is the tighter of the datanet's and the uploader's quota; each loses
    // its own pending uploads (exact when the uploader's quota is the tighter, and never more
    // generous than the chain when the datanet's is).
    let datanet_only = datanets_view(
        &api.chain,
        datanet_id,
        IDatanets::quotaLeftCall {
            datanetId: datanet_id,
            contributor: Address::ZERO,
        },
    )?;
    let today = now - now % DAY;
    let by_datanet = api.pending.datanet_usage_since(datanet_id, today);
    let by_uploader = api.pending.uploader_usage_since(uploader, today);
    let bytes_left = datanet_only
        .remainingBytes
        .saturating_sub(by_datanet.0)
        .min(left.remainingBytes.saturating_sub(by_uploader.0));
    let files_left = datanet_only
        .remainingFiles
        .saturating_sub(by_datanet.1)
        .min(left.remainingFiles.saturating_sub(by_uploader.1));
    if size > bytes_left || files_left == 0 {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "over the daily quota: {bytes_left} bytes and {files_left} files left today for \
                 datanet {datanet_id} and {uploader} (uploads not yet contributed count), and \
                 this file is {size} bytes"
            ),
        ));
    }
    Ok(())
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
    State(api): State<ContentApi>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    reader: Result<Query<reading::Reader>, QueryRejection>,
) -> Result<Json<Manifest>, ApiError> {
    let Path(hash) = path?;
    let Query(reader) = reader?;
    let hash = parse_hash(&hash)?;
    // Its file name and row hashes say as much as the rows of a guessed file.
    reading::may_read(&api, hash, &headers, &reader)?;
    let store = api.store.clone();
    let manifest = tokio::task::spawn_blocking(move || store.manifest(hash))
        .await
        .map_err(internal)??;
    Ok(Json(manifest))
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn rows(
    State(api): State<ContentApi>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    page: Result<Query<Page>, QueryRejection>,
    reader: Result<Query<reading::Reader>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(hash) = path?;
    let Query(page) = page?;
    let Query(reader) = reader?;
    let hash = parse_hash(&hash)?;
    reading::may_read(&api, hash, &headers, &reader)?;
    let limit = page.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let store = api.store.clone();
    let page = tokio::task::spawn_blocking(move || store.rows_page(hash, page.offset, limit))
        .await
        .map_err(internal)??;
    Ok(Json(serde_json::json!({
        "contentHash": hash,
        "total": page.total,
        "format": page.format,
        "rows": page.rows,
    })))
}
