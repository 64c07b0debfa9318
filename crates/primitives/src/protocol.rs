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
    /// Seconds between an unlock of inference escrow and the withdrawal it allows: escrow a
    /// node served a completion against stays until its settlement has landed.
    pub escrow_withdrawal_delay: u64,
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
    /// The Governor's voting rules.
    pub governance: GovernanceParams,
    /// Model staking, slashing and contributor penalties.
    pub staking: StakingParams,
    /// Validator feedback on settled inferences.
    pub feedback: FeedbackParams,
    /// Paid access to datanets for training.
    pub data_access: DataAccessParams,
}

const MIB: u64 = 1 << 20;

impl Default for ProtocolParams {
    /// 0.01 OPEN platform fee; 70/10/20 split; escrow withdrawn a day after its unlock; 0.1 OPEN + 0.01 OPEN per MiB per datanet
    /// version; 100 MiB and 100 files a day per contributor, 1 GiB and 1,000 files per datanet.
    fn default() -> Self {
        let milli = OPEN / U256::from(1_000);
        Self {
            admin: None,
            platform_fee: milli * U256::from(10),
            creator_share_ppm: 700_000,
            stakers_share_ppm: 100_000,
            contributors_share_ppm: 200_000,
            escrow_withdrawal_delay: DAY,
            datanet_fee_base: milli * U256::from(100),
            datanet_fee_per_mib: milli * U256::from(10),
            contributor_daily_bytes: 100 * MIB,
            contributor_daily_files: 100,
            datanet_daily_bytes: 1024 * MIB,
            datanet_daily_files: 1_000,
            governance: GovernanceParams::default(),
            staking: StakingParams::default(),
            feedback: FeedbackParams::default(),
            data_access: DataAccessParams::default(),
        }
    }
}

const DAY: u64 = 86_400;

/// The Governor's parameters (times in seconds: the Governor's clock is the block timestamp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GovernanceParams {
    /// From proposal to the start of voting; votes count at the proposal's snapshot.
    pub voting_delay: u64,
    /// How long voting lasts.
    pub voting_period: u64,
    /// GOPEN votes (in wei) an account needs to propose.
    pub proposal_threshold: U256,
    /// Share of the GOPEN supply at the snapshot that must vote For or Abstain, in ppm.
    pub quorum_ppm: u32,
    /// From queueing a succeeded proposal to when it may execute.
    pub timelock_delay: u64,
    /// How long a queued proposal stays executable before it expires.
    pub grace_period: u64,
}

impl Default for GovernanceParams {
    /// Threshold 100 GOPEN, quorum 25%, delay 1 day, period 14 days, timelock 1 day, grace 14
    /// days.
    fn default() -> Self {
        Self {
            voting_delay: DAY,
            voting_period: 14 * DAY,
            proposal_threshold: OPEN * U256::from(100),
            quorum_ppm: 250_000,
            timelock_delay: DAY,
            grace_period: 14 * DAY,
        }
    }
}

impl GovernanceParams {
    /// The dev chain's: the same rules on a timescale of seconds and minutes.
    pub fn dev() -> Self {
        Self {
            voting_delay: 1,
            voting_period: 300,
            timelock_delay: 60,
            grace_period: DAY,
            ..Self::default()
        }
    }
}

/// Staking's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StakingParams {
    /// Seconds unstaked OPEN waits (and stays slashable) before it can be withdrawn.
    pub unbonding_period: u64,
    /// Operator stake every deployed model needs, in wei, whatever its volume.
    pub operator_min_stake: U256,
    /// Extra operator stake per unit of the model's trailing fee volume, in ppm.
    pub operator_volume_ppm: u32,
    /// Length of the trailing fee-volume window, in seconds.
    pub volume_window: u64,
    /// Share of a slash paid to the reporter (the beneficiary), in ppm; the rest is burned
    /// into the treasury.
    pub reporter_share_ppm: u32,
    /// Adversarial-contribution flags after which a contributor's rewards are cut.
    pub penalty_threshold: u32,
    /// How much of a penalized contributor's rewards goes to the treasury, in ppm.
    pub penalty_cut_ppm: u32,
}

impl Default for StakingParams {
    /// 7-day unbonding; operators stake 10 OPEN plus 10% of the model's fees over 30 days;
    /// reporters get 10% of a slash; 3 flags cut a contributor's rewards by half.
    fn default() -> Self {
        Self {
            unbonding_period: 7 * DAY,
            operator_min_stake: OPEN * U256::from(10),
            operator_volume_ppm: 100_000,
            volume_window: 30 * DAY,
            reporter_share_ppm: 100_000,
            penalty_threshold: 3,
            penalty_cut_ppm: 500_000,
        }
    }
}

/// Training access to datanets: how its fees are split, and the price cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DataAccessParams {
    /// Share of each access fee that goes to the treasury, in ppm.
    pub protocol_share_ppm: u32,
    /// Share that goes to the datanet's owner, in ppm; the rest goes to the contributors.
    pub owner_share_ppm: u32,
    /// The highest price per row an owner may ask, in wei.
    pub max_price_per_row: U256,
}

impl Default for DataAccessParams {
    /// 5% to the treasury, 10% to the owner, 85% to the contributors; at most 1 OPEN a row.
    fn default() -> Self {
        Self {
            protocol_share_ppm: 50_000,
            owner_share_ppm: 100_000,
            max_price_per_row: OPEN,
        }
    }
}

/// Feedback's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FeedbackParams {
    /// Share of each platform fee that funds the receipt's feedback reward, in ppm.
    pub fee_share_ppm: u32,
    /// Stake a validator registers with, in wei.
    pub validator_min_stake: U256,
    /// Seconds after settlement during which validators commit ratings.
    pub commit_window: u64,
    /// Seconds after the commit window during which they reveal them.
    pub reveal_window: u64,
    /// Largest distance (in score points, 0 to 100) from the median that still earns.
    pub tolerance: u8,
    /// Outlier ratings in a row after which a validator loses part of its stake.
    pub outlier_limit: u32,
    /// The part it loses, in ppm.
    pub outlier_slash_ppm: u32,
    /// Weight of each new median in the model's quality score (an EMA), in ppm.
    pub quality_alpha_ppm: u32,
    /// Share of the revealed stake flagging an output harmful that triggers a slashing
    /// proposal, in ppm.
    pub harmful_quorum_ppm: u32,
    /// The slash such a proposal asks for, in ppm of the model's stake.
    pub harmful_slash_ppm: u32,
}

impl Default for FeedbackParams {
    /// 10% of platform fees; 10 OPEN validator stake; a day to commit and a day to reveal;
    /// 10 points tolerance; 3 outliers in a row cost 1% of stake; quality EMA weight 20%; a
    /// majority of revealed stake flagging harm proposes a 10% slash.
    fn default() -> Self {
        Self {
            fee_share_ppm: 100_000,
            validator_min_stake: OPEN * U256::from(10),
            commit_window: DAY,
            reveal_window: DAY,
            tolerance: 10,
            outlier_limit: 3,
            outlier_slash_ppm: 10_000,
            quality_alpha_ppm: 200_000,
            harmful_quorum_ppm: 500_001,
            harmful_slash_ppm: 100_000,
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
        let ppms = [
            ("governance.quorumPpm", self.governance.quorum_ppm),
            (
                "staking.operatorVolumePpm",
                self.staking.operator_volume_ppm,
            ),
            ("staking.reporterSharePpm", self.staking.reporter_share_ppm),
            ("staking.penaltyCutPpm", self.staking.penalty_cut_ppm),
            ("feedback.feeSharePpm", self.feedback.fee_share_ppm),
            ("feedback.outlierSlashPpm", self.feedback.outlier_slash_ppm),
            ("feedback.qualityAlphaPpm", self.feedback.quality_alpha_ppm),
            (
                "feedback.harmfulQuorumPpm",
                self.feedback.harmful_quorum_ppm,
            ),
            ("feedback.harmfulSlashPpm", self.feedback.harmful_slash_ppm),
        ];
        if let Some((name, value)) = ppms.iter().find(|(_, v)| *v > 1_000_000) {
            return Err(format!("{name} is {value}, more than 1000000 ppm"));
        }
        let access = u64::from(self.data_access.protocol_share_ppm)
            + u64::from(self.data_access.owner_share_ppm);
        if access > 1_000_000 {
            return Err(format!(
                "dataAccess.protocolSharePpm + dataAccess.ownerSharePpm is {access}, more than \
                 1000000 ppm"
            ));
        }
        if self.governance.voting_period == 0 {
            return Err("governance.votingPeriod must be at least 1 second".into());
        }
        Ok(())
    }
}
