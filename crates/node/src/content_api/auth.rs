//! Who an upload is from: the account that signed it, or the dev account an API key stands for.
//!
//! A signed upload carries `X-OpenLedger-Signature`, an EIP-191 (`personal_sign`) signature of
//! [`upload_message`]: the chain, the datanet, the file's name and the keccak-256 of its bytes, so
//! a signature is good for one file, read one way, to one datanet, and cannot be moved. A
//! published adapter is signed the same way, over [`adapter_message`].

use alloy_primitives::{Address, B256, Signature, U256};
use axum::http::{HeaderMap, StatusCode, header};

use super::ApiError;

/// The header that carries an upload's signature.
pub const SIGNATURE_HEADER: &str = "x-openledger-signature";

/// What an uploader signs (EIP-191) to upload a file named `name` (its extension says how it
/// is split into rows) with keccak-256 `file_hash` to `datanet` on chain `chain_id`.
pub fn upload_message(chain_id: u64, datanet: U256, name: &str, file_hash: B256) -> String {
    format!(
        "OpenLedger upload of file {file_hash} named {name} to datanet {datanet} on chain {chain_id}"
    )
}

/// What a model's creator signs (EIP-191) to publish model `model`'s adapter, whose weights hash
/// to `adapter_hash` and whose `adapter_config.json` hashes to `config_hash`, on chain `chain_id`.
pub fn adapter_message(
    chain_id: u64,
    model: U256,
    adapter_hash: B256,
    config_hash: B256,
) -> String {
    format!(
        "OpenLedger adapter {adapter_hash} with config {config_hash} for model {model} on chain {chain_id}"
    )
}

/// How a request says who it is from, read before its body.
pub(super) enum Credential {
    /// `Authorization: Bearer dev-<N>`: dev account N.
    DevKey(Address),
    /// A signature to check once the file is read.
    Signature(Signature),
}

/// Reads the request's credential: an API key standing for one of `dev_accounts`, or a
/// signature. Either is needed; `signs` says what a signature is over, for the refusal.
pub(super) fn credential(
    headers: &HeaderMap,
    dev_accounts: &[Address],
    signs: &str,
) -> Result<Credential, ApiError> {
    let unauthorized = |m: String| ApiError(StatusCode::UNAUTHORIZED, m);
    if let Some(value) = headers.get(SIGNATURE_HEADER) {
        let bytes = value
            .to_str()
            .ok()
            .and_then(|v| alloy_primitives::hex::decode(v.trim()).ok())
            .ok_or_else(|| unauthorized(format!("{SIGNATURE_HEADER} is not hex")))?;
        let signature = Signature::from_raw(&bytes).map_err(|e| {
            unauthorized(format!(
                "{SIGNATURE_HEADER} is not a 65-byte signature: {e}"
            ))
        })?;
        return Ok(Credential::Signature(signature));
    }
    let Some(key) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
    else {
        return Err(unauthorized(format!(
            "the request must say who it is from: sign \"{signs}\" (EIP-191) and send the \
             signature as {SIGNATURE_HEADER}, or on a dev node send Authorization: Bearer dev-<N>"
        )));
    };
    key.strip_prefix("dev-")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| dev_accounts.get(n).copied())
        .map(Credential::DevKey)
        .ok_or_else(|| {
            unauthorized(format!(
                "unknown API key {key:?}: dev-0 to dev-{} stand for the dev accounts",
                dev_accounts.len().saturating_sub(1)
            ))
        })
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's case does not matter
/// (RFC 7235).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Credential {
    /// The account that signed `message`, or the dev account the key stands for.
    pub(super) fn signer_of(&self, message: &str) -> Result<Address, ApiError> {
        match self {
            Credential::DevKey(account) => Ok(*account),
            Credential::Signature(signature) => signature
                .recover_address_from_msg(message.as_bytes())
                .map_err(|e| {
                    ApiError(
                        StatusCode::UNAUTHORIZED,
                        format!("the signature recovers no account: {e}"),
                    )
                }),
        }
    }

    /// The account the upload of `bytes` to `datanet` is from.
    pub(super) fn uploader(
        &self,
        chain_id: u64,
        datanet: U256,
        name: &str,
        bytes: &[u8],
    ) -> Result<Address, ApiError> {
        let hash = alloy_primitives::keccak256(bytes);
        self.signer_of(&upload_message(chain_id, datanet, name, hash))
    }
}
