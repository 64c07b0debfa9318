//! The protocol modules' parameters at genesis: fees, shares and quotas that governance may
//! later change. They are written into the modules' storage in block 0, so every node starts
//! from the same values and `eth_getStorageAt` shows them.

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::OPEN;

/// Initial parameters of the protocol modules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProtocolParams {
    /// An account allowed to approve models until governance takes over (the Governor module
    /// is always allowed). `null`: only the Governor.
    pub admin: Option<Address>,
    /// The platform fee of every inference, in wei; it goes to the treasury.
    pub platform_fee: U256,
    /// The model creator's share of an inference fee after the platform fee, in ppm.
    pub creator_share_ppm: u32,
    /// The model stakers' share, in ppm.
    pub stakers_share_ppm: u32,
    /// The data contributors' share, in ppm.
    pub contributors_share_ppm: u32,
    /// Fixed part of the fee for publishing a datanet or cutting a version, in wei.
    pub datanet_fee_base: U256,
    /// Size part of that fee, in wei per started MiB of data the version adds.
    pub datanet_fee_per_mib: U256,
    /// Bytes one account may contribute per day (UTC), over all datanets.
    pub contributor_daily_bytes: u64,
    /// Files one account may contribute per day.
    pub contributor_daily_files: u64,
    /// Bytes one datanet may receive per day.
    pub datanet_daily_bytes: u64,
    /// Files one datanet may receive per day.
    pub datanet_daily_files: u64,
}

const MIB: u64 = 1 << 20;

impl Default for ProtocolParams {
    /// 0.01 OPEN platform fee; 70/10/20 split; 0.1 OPEN + 0.01 OPEN per MiB per datanet
    /// version; 100 MiB and 100 files a day per contributor, 1 GiB and 1,000 files per datanet.
    fn default() -> Self {
        let milli = OPEN / U256::from(1_000);
        Self {
            admin: None,
            platform_fee: milli * U256::from(10),
            creator_share_ppm: 700_000,
            stakers_share_ppm: 100_000,
            contributors_share_ppm: 200_000,
            datanet_fee_base: milli * U256::from(100),
            datanet_fee_per_mib: milli * U256::from(10),
            contributor_daily_bytes: 100 * MIB,
            contributor_daily_files: 100,
            datanet_daily_bytes: 1024 * MIB,
            datanet_daily_files: 1_000,
        }
    }
}

impl ProtocolParams {
    /// Checks values no module can work with.
    pub fn validate(&self) -> Result<(), String> {
        let shares = u64::from(self.creator_share_ppm)
            + u64::from(self.stakers_share_ppm)
            + u64::from(self.contributors_share_ppm);
        if shares != 1_000_000 {
            return Err(format!(
                "protocol shares add up to {shares} ppm, not 1000000"
            ));
        }
        Ok(())
    }
}
