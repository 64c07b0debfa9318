//! Who an upload is from: the account that signed it, or the dev account an API key stands for.
//!
//! A signed upload carries `X-OpenLedger-Signature`, an EIP-191 (`personal_sign`) signature of
//! [`upload_message`]: the chain, the datanet, the file's name and the keccak-256 of its bytes, so
//! a signature is good for one file, read one way, to one datanet, and cannot be moved. A
//! published adapter is signed the same way, over
//! [`openledger_flywheel::signing::adapter_message`].

use alloy_primitives::{Address, Signature, U256};
use axum::http::{HeaderMap, StatusCode, header};

use openledger_flywheel::signing::{SIGNATURE_HEADER, bearer_token, dev_key_index, upload_message};

use super::ApiError;

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
    dev_key_index(key, dev_accounts.len())
        .map(|n| dev_accounts[n])
        .map(Credential::DevKey)
        .ok_or_else(|| {
            unauthorized(format!(
                "unknown API key {key:?}: dev-0 to dev-{} stand for the dev accounts",
                dev_accounts.len().saturating_sub(1)
            ))
        })
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
