//! The genesis file: the chain id, the first block's parameters and the initial allocation.
//!
//! The format is JSON, close to what geth and anvil users know (`alloc` keyed by address), with
//! OpenLedger's own fields: where base fees go, and the length of a block.

use std::{collections::BTreeMap, path::Path};

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::{
    OPEN, addresses,
    protocol::{FeedbackParams, GovernanceParams, ProtocolParams, StakingParams},
};

/// The parameters and initial state of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Genesis {
    /// EIP-155 chain id signed into every transaction.
    pub chain_id: u64,
    /// Gas limit of every block.
    #[serde(default = "default_gas_limit")]
    pub gas_limit: u64,
    /// Base fee of the first block, in wei; later blocks follow EIP-1559.
    #[serde(default = "default_base_fee")]
    pub base_fee_per_gas: u64,
    /// Timestamp of the genesis block (seconds).
    #[serde(default)]
    pub timestamp: u64,
    /// Receiver of the EIP-1559 base fee. OpenLedger routes it to the treasury module instead of
    /// burning it; `null` burns it as Ethereum does.
    #[serde(default = "default_base_fee_recipient")]
    pub base_fee_recipient: Option<Address>,
    /// Receiver of priority fees (the block producer's account).
    #[serde(default)]
    pub coinbase: Address,
    /// Extra data of the genesis block.
    #[serde(default)]
    pub extra_data: Bytes,
    /// Initial accounts.
    pub alloc: BTreeMap<Address, GenesisAccount>,
    /// Initial parameters of the protocol modules.
    #[serde(default)]
    pub protocol: ProtocolParams,
}

/// One account of the initial allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenesisAccount {
    /// Balance in wei.
    #[serde(default)]
    pub balance: U256,
    /// Account nonce.
    #[serde(default)]
    pub nonce: u64,
    /// Runtime bytecode.
    #[serde(default, skip_serializing_if = "<[u8]>::is_empty")]
    pub code: Bytes,
    /// Storage slots.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage: BTreeMap<B256, B256>,
}

/// A genesis file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The file could not be read.
    #[error("cannot read genesis file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid genesis JSON.
    #[error("invalid genesis file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// The values are inconsistent.
    #[error("invalid genesis: {0}")]
    Invalid(String),
}

fn default_gas_limit() -> u64 {
    30_000_000
}

fn default_base_fee() -> u64 {
    1_000_000_000
}

fn default_base_fee_recipient() -> Option<Address> {
    Some(addresses::TREASURY)
}

/// Chain id of the built-in development genesis ("1612", OpenLedger's mainnet id, then "1337").
pub const DEV_CHAIN_ID: u64 = 16_121_337;

/// Total supply of OPEN at genesis on every OpenLedger network: one billion.
pub const GENESIS_SUPPLY_OPEN: u64 = 1_000_000_000;

impl Genesis {
    /// Reads and validates a genesis file.
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: shown.clone(),
            source,
        })?;
        let genesis: Self = serde_json::from_str(&text).map_err(|source| GenesisError::Parse {
            path: shown,
            source,
        })?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// The development genesis: the given dev accounts get 10,000,000 OPEN each and the treasury
    /// holds the rest of the one-billion supply. The first dev account is the protocol admin.
    pub fn dev(chain_id: u64, dev_accounts: &[Address]) -> Self {
        let per_account = OPEN * U256::from(10_000_000u64);
        let mut alloc: BTreeMap<Address, GenesisAccount> = dev_accounts
            .iter()
            .map(|a| {
                (
                    *a,
                    GenesisAccount {
                        balance: per_account,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let supply = OPEN * U256::from(GENESIS_SUPPLY_OPEN);
        let rest = supply - per_account * U256::from(dev_accounts.len());
        alloc.entry(addresses::TREASURY).or_default().balance += rest;
        Self {
            chain_id,
            gas_limit: default_gas_limit(),
            base_fee_per_gas: default_base_fee(),
            timestamp: 0,
            base_fee_recipient: default_base_fee_recipient(),
            // Nobody's account, as anvil and Hardhat do: a dev account's balance then moves only
            // by what its own transactions do.
            coinbase: Address::ZERO,
            extra_data: Bytes::new(),
            alloc,
            protocol: ProtocolParams {
                admin: dev_accounts.first().copied(),
                escrow_withdrawal_delay: 60,
                governance: GovernanceParams::dev(),
                staking: StakingParams {
                    unbonding_period: 60,
                    ..StakingParams::default()
                },
                feedback: FeedbackParams {
                    commit_window: 60,
                    reveal_window: 60,
                    ..FeedbackParams::default()
                },
                ..ProtocolParams::default()
            },
        }
    }

    /// The sum of all allocated balances.
    pub fn total_supply(&self) -> U256 {
        self.alloc.values().map(|a| a.balance).sum()
    }

    /// Checks the values a chain cannot start with.
    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.chain_id == 0 {
            return Err(GenesisError::Invalid("chainId must not be 0".into()));
        }
        self.protocol.validate().map_err(GenesisError::Invalid)?;
        if self.gas_limit < 5_000 {
            return Err(GenesisError::Invalid(format!(
                "gasLimit {} is below the 5000 minimum",
                self.gas_limit
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_genesis_allocates_exactly_one_billion_open() {
        let accounts = [Address::repeat_byte(1), Address::repeat_byte(2)];
        let genesis = Genesis::dev(1337, &accounts);
        assert_eq!(
            genesis.total_supply(),
            OPEN * U256::from(GENESIS_SUPPLY_OPEN)
        );
        assert_eq!(
            genesis.alloc[&accounts[0]].balance,
            OPEN * U256::from(10_000_000u64)
        );
    }

    #[test]
    fn genesis_round_trips_through_json() {
        let genesis = Genesis::dev(7, &[Address::repeat_byte(9)]);
        let json = serde_json::to_string_pretty(&genesis).unwrap();
        let back: Genesis = serde_json::from_str(&json).unwrap();
        assert_eq!(back, genesis);
    }

    #[test]
    fn rejects_unknown_fields_and_zero_chain_id() {
        let bad = r#"{"chainId": 1, "alloc": {}, "gaslimit": 3}"#;
        assert!(serde_json::from_str::<Genesis>(bad).is_err());
        let zero: Genesis = serde_json::from_str(r#"{"chainId": 0, "alloc": {}}"#).unwrap();
        assert!(zero.validate().is_err());
    }
}
