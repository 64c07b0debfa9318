//! The transactions a workload sends: native OPEN transfers or ERC-20 transfers, pre-signed.

use std::path::Path;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};
use alloy_sol_types::{SolCall, sol};

sol! {
    function transfer(address to, uint256 value) external returns (bool);
}

/// What the load consists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Native OPEN/ETH transfers (21,000 gas each).
    Native,
    /// ERC-20 `transfer` calls on a freshly deployed token.
    Erc20,
}

impl Workload {
    /// The name printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Native => "native",
            Workload::Erc20 => "erc20",
        }
    }

    /// The gas limit each of its transactions is signed with: a block with less gas left than
    /// this cannot take another one.
    pub fn tx_gas(self) -> u64 {
        match self {
            Workload::Native => 21_000,
            Workload::Erc20 => 60_000,
        }
    }
}

/// Fee cap and tip of every benchmark transaction (the same on both nodes).
pub const MAX_FEE: u128 = 100_000_000_000;
/// Priority fee of every benchmark transaction.
pub const TIP: u128 = 1_000_000_000;
/// Token supply minted to the deployer.
pub const TOKEN_SUPPLY: u128 = 1_000_000_000_000_000_000_000_000;

/// The deployment bytecode of the test ERC-20 (its constructor takes the supply).
pub fn token_artifact(path: &Path) -> anyhow::Result<Bytes> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}); run `node tests/e2e/compile.mjs {}` first",
            path.display(),
            path.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let hex = json["Token"]["bytecode"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no Token in {}", path.display()))?;
    let mut code: Vec<u8> = hex.parse::<Bytes>()?.to_vec();
    code.extend_from_slice(&U256::from(TOKEN_SUPPLY).to_be_bytes::<32>());
    Ok(code.into())
}

/// Dev account `index` of the test mnemonic (the accounts both anvil and openledger fund).
pub fn dev_signer(index: u32) -> anyhow::Result<PrivateKeySigner> {
    Ok(MnemonicBuilder::<English>::default()
        .phrase("test test test test test test test test test test test junk")
        .derivation_path(format!("m/44'/60'/0'/0/{index}"))?
        .build()?)
}

/// A signed EIP-1559 transaction, EIP-2718 encoded.
pub fn sign(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: TxKind,
    gas: u64,
    input: Bytes,
) -> Bytes {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: MAX_FEE,
        max_priority_fee_per_gas: TIP,
        to,
        value: if input.is_empty() {
            U256::from(1)
        } else {
            U256::ZERO
        },
        input,
        ..Default::default()
    };
    let signature = signer
        .sign_hash_sync(&tx.signature_hash())
        .expect("signing with a local key");
    TxEnvelope::from(tx.into_signed(signature))
        .encoded_2718()
        .into()
}

/// The recipient of the `i`-th transfer.
pub fn recipient(i: usize) -> Address {
    Address::left_padding_from(&(i as u64 + 0x1000).to_be_bytes())
}

/// Pre-signs `count` transactions round-robin over `senders`, starting at their `nonces`.
pub fn presign(
    workload: Workload,
    senders: &[PrivateKeySigner],
    nonces: &[u64],
    chain_id: u64,
    token: Address,
    count: usize,
) -> Vec<Bytes> {
    (0..count)
        .map(|i| {
            let s = i % senders.len();
            let nonce = nonces[s] + (i / senders.len()) as u64;
            match workload {
                Workload::Native => sign(
                    &senders[s],
                    chain_id,
                    nonce,
                    TxKind::Call(recipient(i)),
                    workload.tx_gas(),
                    Bytes::new(),
                ),
                Workload::Erc20 => {
                    let data = transferCall {
                        to: recipient(i),
                        value: U256::from(1),
                    }
                    .abi_encode();
                    sign(
                        &senders[s],
                        chain_id,
                        nonce,
                        TxKind::Call(token),
                        workload.tx_gas(),
                        data.into(),
                    )
                }
            }
        })
        .collect()
}

/// Calldata funding `to` with tokens.
pub fn fund_tokens(to: Address) -> Bytes {
    transferCall {
        to,
        value: U256::from(TOKEN_SUPPLY / 1_000_000),
    }
    .abi_encode()
    .into()
}
