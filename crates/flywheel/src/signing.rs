//! What accounts sign for the node's HTTP APIs (EIP-191 messages, each naming the chain and what
//! it is good for, so a signature cannot be moved), and how an API key is read.

use alloy_primitives::{B256, U256};

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

/// What an account signs (EIP-191) to read the rows of the file whose content hash is
/// `content_hash` on chain `chain_id` until `until` (seconds since the epoch): a read of a
/// private datanet's file is good for a few minutes, for that file only.
pub fn rows_message(chain_id: u64, content_hash: B256, until: u64) -> String {
    format!("OpenLedger rows of {content_hash} until {until} on chain {chain_id}")
}

/// The dev account index a dev API key (`dev-<N>`, N written plainly: `dev-01` is not a key)
/// stands for, among `accounts` dev accounts.
pub fn dev_key_index(key: &str, accounts: usize) -> Option<usize> {
    let digits = key.strip_prefix("dev-")?;
    let n: usize = digits.parse().ok()?;
    (n.to_string() == digits && n < accounts).then_some(n)
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's case does not matter
/// (RFC 7235).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_key_names_a_dev_account_plainly() {
        assert_eq!(dev_key_index("dev-1", 10), Some(1));
        assert_eq!(dev_key_index("dev-0", 10), Some(0));
        for bad in ["dev-01", "dev-+1", "dev-10", "dev-", "dev-1 ", "DEV-1", "1"] {
            assert_eq!(dev_key_index(bad, 10), None, "{bad:?}");
        }
    }
}
