//! Settlement: inference fees paid from escrow and split between the protocol, the model's
//! creator, its stakers and the data contributors by attribution weight (DESIGN §4).
//!
//! [`fee`] holds the arithmetic every node must agree on to the wei. The module here holds
//! users' escrows, checks their signed EIP-712 orders against the operator's receipts and
//! accrues the rewards; see `abi/ISettlement.sol` for the rules. Escrows and unclaimed rewards
//! are the module account's whole balance.

pub mod challenge;
pub mod fee;
mod training;

use crate::Result;
use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, Signature, U256};
use alloy_sol_types::{Eip712Domain, SolCall, SolStruct, eip712_domain};
use openledger_chain::{ModuleCall, ModuleError, ModuleHost, NativeModule};
use openledger_primitives::{Genesis, addresses};

use crate::{
    abi::{
        IFeedback,
        IModels::Status,
        ISettlement::{self, ISettlementCalls, InferenceOrder, InferenceReceipt, Role},
        IStaking,
    },
    call::{Answer, decode, emit, emitted, no_value, returns, revert},
    state::{
        datanets::{contribution_info, datanet_info},
        feedback::reward_for,
        is_governance,
        models::{ModelInfo, model_info, served_on},
        settlement::{ESCROW, NONCES, PARAMS, REWARDS, UNLOCKING, WITHDRAWAL_DELAY, unlock},
        staking::{reward_cut_ppm, stake_check},
    },
    storage::{Slot, Storage, consecutive},
};
use challenge::AttributionOracle;
use fee::{FeeError, Shares};

/// How a receipt's weights were computed: its `method` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AttributionMethod {
    /// Nothing was attributed (no weights).
    None = 0,
    /// Span attribution against a datanet version's index.
    Span = 1,
    /// Gradient influence of the adapter's training rows.
    Gradient = 2,
}

impl AttributionMethod {
    /// The method a receipt's `method` field names, if any.
    pub fn from_u8(method: u8) -> Option<Self> {
        [Self::None, Self::Span, Self::Gradient]
            .into_iter()
            .find(|m| *m as u8 == method)
    }

    /// Whether a challenge can recompute the weights from the texts alone: span attribution
    /// is a pure function of them and the index; gradient influence needs the training run.
    pub fn is_recomputable(self) -> bool {
        matches!(self, Self::None | Self::Span)
    }
}

impl From<AttributionMethod> for u8 {
    fn from(method: AttributionMethod) -> Self {
        method as u8
    }
}

/// Gas for recovering the signer of an order (as the `ecrecover` precompile).
const RECOVER_GAS: u64 = 3_000;

/// The settlement module; challenges need an [`AttributionOracle`].
#[derive(Debug, Clone, Default)]
pub struct Settlement {
    oracle: Option<Arc<dyn AttributionOracle>>,
}

impl Settlement {
    /// The module, recomputing challenged attributions with `oracle`.
    pub fn with_oracle(oracle: Arc<dyn AttributionOracle>) -> Self {
        Self {
            oracle: Some(oracle),
        }
    }
}

impl NativeModule for Settlement {
    fn address(&self) -> Address {
        addresses::SETTLEMENT
    }

    fn name(&self) -> &'static str {
        "settlement"
    }

    fn genesis_storage(&self, genesis: &Genesis) -> Vec<(U256, U256)> {
        let p = &genesis.protocol;
        let shares = Shares {
            creator: p.creator_share_ppm,
            stakers: p.stakers_share_ppm,
            contributors: p.contributors_share_ppm,
        };
        let mut storage = consecutive(PARAMS, words(p.platform_fee, shares));
        storage.push((WITHDRAWAL_DELAY.0, U256::from(p.escrow_withdrawal_delay)));
        storage
    }

    fn call(&self, call: ModuleCall<'_>, host: &mut dyn ModuleHost) -> Answer {
        let decoded: ISettlementCalls = decode(call.input, ISettlement::InvalidCalldata {})?;
        if !matches!(
            decoded,
            ISettlementCalls::deposit(_)
                | ISettlementCalls::challenge(_)
                | ISettlementCalls::accrueAccess(_)
        ) {
            no_value(&call, ISettlement::NotPayable {})?;
        }
        let mut s = Storage::own(host);
        let caller = call.caller;
        use ISettlementCalls as C;
        match decoded {
            C::deposit(_) => deposit(&mut s, caller, call.value),
            C::unlock(c) => unlock(&mut s, caller, c.amount),
            C::withdraw(c) => withdraw(&mut s, caller, c.amount),
            C::balanceOf(c) => {
                let balance: U256 = s.get(ESCROW.at(c.account))?;
                Ok(ISettlement::balanceOfCall::abi_encode_returns(&balance).into())
            }
            C::escrowOf(c) => {
                let balance: U256 = s.get(ESCROW.at(c.account))?;
                let (unlocking, release) = unlocking(&mut s, c.account, balance)?;
                let out = ISettlement::escrowOfReturn {
                    balance,
                    unlocking,
                    releaseAt: if unlocking.is_zero() { 0 } else { release },
                };
                Ok(ISettlement::escrowOfCall::abi_encode_returns(&out).into())
            }
            C::withdrawalDelay(_) => Ok(returns(&s.get::<u64>(WITHDRAWAL_DELAY)?)),
            C::settle(c) => {
                let fee = settle(&mut s, caller, c.order, &c.signature, c.receipt)?;
                Ok(ISettlement::settleCall::abi_encode_returns(&fee).into())
            }
            C::settleBatch(c) => {
                if c.settlements.is_empty() {
                    return Err(revert(ISettlement::EmptyBatch {}));
                }
                let mut total = U256::ZERO;
                for one in c.settlements {
                    let fee = settle(&mut s, caller, one.order, &one.signature, one.receipt)?;
                    total = total.saturating_add(fee);
                }
                Ok(ISettlement::settleBatchCall::abi_encode_returns(&total).into())
            }
            C::claim(_) => claim(&mut s, caller),
            C::accrueAccess(c) => accrue_access(&mut s, caller, call.value, c),
            C::holdTraining(c) => training::hold(&mut s, caller, c),
            C::payTraining(c) => training::pay(&mut s, caller, c.holdId),
            C::refundTraining(c) => training::refund(&mut s, caller, c.holdId),
            C::trainingHold(c) => {
                let held = training::read(&mut s, c.holdId)?;
                Ok(ISettlement::trainingHoldCall::abi_encode_returns(&held).into())
            }
            C::trainingOrderDigest(c) => {
                let digest = training::digest(&mut s, &c.order);
                Ok(ISettlement::trainingOrderDigestCall::abi_encode_returns(&digest).into())
            }
            C::challenge(c) => {
                challenge::challenge(&mut s, self.oracle.as_deref(), caller, call.value, c)
            }
            C::receiptStatus(c) => {
                let (status, settled_at, hash) = challenge::status(&mut s, c.receiptId)?;
                let out = ISettlement::receiptStatusReturn {
                    status,
                    settledAt: settled_at,
                    recordHash: hash,
                };
                Ok(ISettlement::receiptStatusCall::abi_encode_returns(&out).into())
            }
            C::challengeBond(_) => Ok(returns(&challenge::CHALLENGE_BOND)),
            C::challengeWindow(_) => Ok(returns(&challenge::CHALLENGE_WINDOW)),
            C::challengeSlashPpm(_) => Ok(returns(&challenge::CHALLENGE_SLASH_PPM)),
            C::rewards(c) => {
                let amount: U256 = s.get(REWARDS.at(c.account))?;
                Ok(ISettlement::rewardsCall::abi_encode_returns(&amount).into())
            }
            C::nonceUsed(c) => {
                let used: bool = s.get(NONCES.at(c.user).at(c.nonce))?;
                Ok(ISettlement::nonceUsedCall::abi_encode_returns(&used).into())
            }
            C::orderDigest(c) => {
                let digest = c.order.eip712_signing_hash(&domain(s.host().chain_id()));
                Ok(ISettlement::orderDigestCall::abi_encode_returns(&digest).into())
            }
            C::domainSeparator(_) => {
                let separator = domain(s.host().chain_id()).separator();
                Ok(ISettlement::domainSeparatorCall::abi_encode_returns(&separator).into())
            }
            C::quote(c) => {
                let model = deployed(&mut s, c.modelId)?;
                let (fee, _) = fee_for(&mut s, &model, c.inputTokens, c.outputTokens)?;
                Ok(ISettlement::quoteCall::abi_encode_returns(&fee).into())
            }
            C::platformFee(_) => {
                let fee: U256 = s.get(PARAMS)?;
                Ok(ISettlement::platformFeeCall::abi_encode_returns(&fee).into())
            }
            C::setParams(c) => set_params(&mut s, caller, c),
            C::shares(_) => {
                let shares = read_shares(&mut s)?;
                let out = ISettlement::sharesReturn {
                    creator: shares.creator,
                    stakers: shares.stakers,
                    contributors: shares.contributors,
                };
                Ok(ISettlement::sharesCall::abi_encode_returns(&out).into())
            }
        }
    }
}

/// The EIP-712 domain users sign orders in.
pub fn domain(chain_id: u64) -> Eip712Domain {
    eip712_domain! {
        name: "OpenLedger Settlement",
        version: "1",
        chain_id: chain_id,
        verifying_contract: addresses::SETTLEMENT,
    }
}

fn deposit(s: &mut Storage<'_>, caller: Address, amount: U256) -> Answer {
    if amount.is_zero() {
        return Err(revert(ISettlement::ZeroAmount {}));
    }
    // What settlements took of escrow that was unlocking is gone: a new deposit does not
    // become withdrawable at once in its place.
    let slot = ESCROW.at(caller);
    let balance: U256 = s.get(slot)?;
    let (unlocked, _) = unlocking(s, caller, balance)?;
    s.set(UNLOCKING.at(caller), unlocked)?;
    s.set(slot, balance + amount)?;
    emitted(
        s.host(),
        &ISettlement::Deposited {
            account: caller,
            amount,
        },
    )
}

/// How much of `account`'s escrow (`balance`) is unlocking, and when it can be withdrawn: no
/// more than the balance, which settlements may have drawn from since the unlock.
fn unlocking(s: &mut Storage<'_>, account: Address, balance: U256) -> Result<(U256, u64)> {
    let slot = UNLOCKING.at(account);
    let amount: U256 = s.get(slot.field(unlock::AMOUNT))?;
    Ok((amount.min(balance), s.get(slot.field(unlock::RELEASE_AT))?))
}

/// The escrow slot of `account` and its balance, refused when it is under `required`.
fn escrow_covering(s: &mut Storage<'_>, account: Address, required: U256) -> Result<(Slot, U256)> {
    let slot = ESCROW.at(account);
    let available: U256 = s.get(slot)?;
    if available < required {
        return Err(revert(ISettlement::InsufficientEscrow {
            available,
            required,
        }));
    }
    Ok((slot, available))
}

fn unlock(s: &mut Storage<'_>, caller: Address, amount: U256) -> Answer {
    escrow_covering(s, caller, amount)?;
    let release = if amount.is_zero() {
        0
    } else {
        let delay: u64 = s.get(WITHDRAWAL_DELAY)?;
        s.host().timestamp().saturating_add(delay)
    };
    let slot = UNLOCKING.at(caller);
    s.set(slot.field(unlock::AMOUNT), amount)?;
    s.set(slot.field(unlock::RELEASE_AT), release)?;
    emitted(
        s.host(),
        &ISettlement::Unlocking {
            account: caller,
            amount,
            releaseAt: release,
        },
    )
}

/// Takes unlocked escrow out: at most what is unlocked, once its delay has passed, and at most
/// what settlements have left of the escrow.
fn withdraw(s: &mut Storage<'_>, caller: Address, amount: U256) -> Answer {
    if amount.is_zero() {
        return Err(revert(ISettlement::ZeroAmount {}));
    }
    let slot = ESCROW.at(caller);
    let available: U256 = s.get(slot)?;
    let (unlocked, release) = unlocking(s, caller, available)?;
    if unlocked < amount {
        return Err(revert(ISettlement::NotUnlocked {
            unlocked,
            required: amount,
        }));
    }
    let now = s.host().timestamp();
    if now < release {
        return Err(revert(ISettlement::StillLocked {
            releaseAt: release,
            timestamp: now,
        }));
    }
    s.set(UNLOCKING.at(caller), unlocked - amount)?;
    s.set(slot, available - amount)?;
    s.host().transfer(caller, amount)?;
    emitted(
        s.host(),
        &ISettlement::Withdrawn {
            account: caller,
            amount,
        },
    )
}

fn claim(s: &mut Storage<'_>, caller: Address) -> Answer {
    let slot = REWARDS.at(caller);
    let amount: U256 = s.get(slot)?;
    if amount.is_zero() {
        return Err(revert(ISettlement::NothingToClaim {}));
    }
    s.set(slot, U256::ZERO)?;
    s.host().transfer(caller, amount)?;
    emit(
        s.host(),
        &ISettlement::Claimed {
            account: caller,
            amount,
        },
    )?;
    Ok(ISettlement::claimCall::abi_encode_returns(&amount).into())
}

/// Settles one signed order with its receipt; returns the fee charged.
fn settle(
    s: &mut Storage<'_>,
    caller: Address,
    order: InferenceOrder,
    signature: &[u8],
    receipt: InferenceReceipt,
) -> Result<U256> {
    let model = deployed(s, order.modelId)?;
    if caller != model.operator {
        return Err(revert(ISettlement::NotOperator {
            modelId: order.modelId,
            account: caller,
        }));
    }
    let stake = stake_check(s.host(), order.modelId, model.operator)?;
    if stake.stake < stake.minimum {
        return Err(revert(ISettlement::StakeBelowMinimum {
            modelId: order.modelId,
            stake: stake.stake,
            minimum: stake.minimum,
        }));
    }
    let now = s.host().timestamp();
    if now > order.expiry {
        return Err(revert(ISettlement::OrderExpired {
            expiry: order.expiry,
            timestamp: now,
        }));
    }
    let nonce = NONCES.at(order.user).at(order.nonce);
    if s.get::<bool>(nonce)? {
        return Err(revert(ISettlement::NonceUsed {
            user: order.user,
            nonce: order.nonce,
        }));
    }
    let digest = order.eip712_signing_hash(&domain(s.host().chain_id()));
    s.host().charge(RECOVER_GAS)?;
    if signer(signature, &digest) != Some(order.user) {
        return Err(revert(ISettlement::BadSignature {}));
    }
    let (fee, platform_fee) = fee_for(s, &model, receipt.inputTokens, receipt.outputTokens)?;
    if fee > order.maxFee {
        return Err(revert(ISettlement::FeeAboveMax {
            fee,
            maxFee: order.maxFee,
        }));
    }
    let (escrow, available) = escrow_covering(s, order.user, fee)?;
    check_served(s, order.modelId, &model, &receipt)?;
    let payees = contributor_payees(
        s,
        receipt.datanetId,
        receipt.datanetVersion,
        &receipt.contributionIds,
        receipt.weights.len(),
    )?;
    let shares = read_shares(s)?;
    let split = fee::split(fee, platform_fee, shares, &receipt.weights).map_err(|e| match e {
        FeeError::WeightsDoNotSum(sum) => revert(ISettlement::WeightsDoNotSum {
            sum: U256::from(sum),
        }),
        other => ModuleError::Fatal(format!("settlement parameters: {other}")),
    })?;

    s.set(escrow, available - fee)?;
    s.set(nonce, true)?;
    let order_hash = order.eip712_hash_struct();
    let record = ISettlement::ReceiptRecord {
        modelId: order.modelId,
        operator: model.operator,
        datanetId: receipt.datanetId,
        datanetVersion: receipt.datanetVersion,
        method: receipt.method,
        promptHash: receipt.promptHash,
        outputHash: receipt.outputHash,
        weightsHash: challenge::weights_hash(&receipt.contributionIds, &receipt.weights),
        pool: split.contributor_pool,
    };
    emit(
        s.host(),
        &ISettlement::Settled {
            orderHash: order_hash,
            modelId: order.modelId,
            user: order.user,
            fee,
            inputTokens: receipt.inputTokens,
            outputTokens: receipt.outputTokens,
            promptHash: receipt.promptHash,
            outputHash: receipt.outputHash,
            datanetId: receipt.datanetId,
            datanetVersion: receipt.datanetVersion,
            method: receipt.method,
            artifactVersion: receipt.artifactVersion,
        },
    )?;
    challenge::record(s, order_hash, record)?;
    // The platform fee is the treasury's, less the receipt's feedback reward.
    let feedback_reward = reward_for(s.host(), platform_fee)?;
    let to_treasury = split.treasury - feedback_reward;
    if !to_treasury.is_zero() {
        s.host().transfer(addresses::TREASURY, to_treasury)?;
        emit(
            s.host(),
            &ISettlement::TreasuryPaid {
                orderHash: order_hash,
                amount: to_treasury,
            },
        )?;
    }
    let record = IFeedback::recordReceiptCall {
        receiptId: order_hash,
        modelId: order.modelId,
        promptHash: receipt.promptHash,
        outputHash: receipt.outputHash,
    };
    s.host()
        .call_module(addresses::FEEDBACK, &record.abi_encode(), feedback_reward)?;
    let model_id = order.modelId;
    accrue(s, model.creator, model_id, Role::Creator, split.creator)?;
    let to_stakers = if stake.has_delegators {
        split.stakers
    } else {
        accrue(s, model.creator, model_id, Role::Stakers, split.stakers)?;
        U256::ZERO
    };
    let notify = IStaking::notifyFeeCall {
        modelId: model_id,
        fee,
    };
    s.host()
        .call_module(addresses::STAKING, &notify.abi_encode(), to_stakers)?;
    for ((account, role), amount) in payees.into_iter().zip(split.contributors) {
        let amount = cut_penalty(s, account, model_id, amount)?;
        accrue(s, account, model_id, role, amount)?;
    }
    Ok(fee)
}

/// Accrues the rewards of a training-access fee the Datanets module sent (`value`): the
/// contributors' parts less their penalty cuts, as inference rewards are.
fn accrue_access(
    s: &mut Storage<'_>,
    caller: Address,
    value: U256,
    c: ISettlement::accrueAccessCall,
) -> Answer {
    if caller != addresses::DATANETS {
        return Err(revert(ISettlement::NotDatanets { caller }));
    }
    let sum = c
        .accruals
        .iter()
        .fold(U256::ZERO, |sum, a| sum.saturating_add(a.amount));
    if sum != value {
        return Err(revert(ISettlement::AccrualMismatch { sum, value }));
    }
    for a in c.accruals {
        let amount = if a.role == Role::AccessContributor {
            cut_penalty(s, a.account, c.modelId, a.amount)?
        } else {
            a.amount
        };
        accrue(s, a.account, c.modelId, a.role, amount)?;
    }
    Ok(Bytes::new())
}

/// Sends the part of a contributor's reward its penalties cut to the treasury; returns the rest.
fn cut_penalty(
    s: &mut Storage<'_>,
    account: Address,
    model_id: U256,
    amount: U256,
) -> Result<U256> {
    let cut_ppm = reward_cut_ppm(s.host(), account)?;
    let cut = amount * U256::from(cut_ppm) / U256::from(fee::PPM);
    if cut.is_zero() {
        return Ok(amount);
    }
    s.host().transfer(addresses::TREASURY, cut)?;
    emit(
        s.host(),
        &ISettlement::RewardCut {
            account,
            modelId: model_id,
            amount: cut,
        },
    )?;
    Ok(amount - cut)
}

/// Checks what a receipt says served it: an artifact version deployed now or before (one a
/// redeploy skipped never served anything), and the datanet version that artifact learned from.
fn check_served(
    s: &mut Storage<'_>,
    model_id: U256,
    model: &ModelInfo,
    receipt: &InferenceReceipt,
) -> Result<()> {
    let served = receipt.artifactVersion;
    let trained_on = match served_on(s.host(), model_id, served)? {
        Some(trained_on) => trained_on,
        None => {
            return Err(revert(ISettlement::ArtifactNotDeployed {
                modelId: model_id,
                artifactVersion: served,
                currentVersion: model.current_artifact,
            }));
        }
    };
    let datanet = receipt.datanetId;
    let Some(&(_, trained)) = trained_on.iter().find(|(id, _)| *id == datanet) else {
        return Err(revert(ISettlement::DatanetNotUsed {
            modelId: model_id,
            datanetId: datanet,
        }));
    };
    if receipt.datanetVersion != trained {
        return Err(revert(ISettlement::VersionNotTrained {
            datanetId: datanet,
            version: receipt.datanetVersion,
            trainedVersion: trained,
        }));
    }
    Ok(())
}

/// Who shares the contributor pool of a receipt on `datanet` at `version`: each weighted
/// contribution's contributor, or with no weights the datanet's owner. Every contribution must
/// have been approved in the datanet at or before that version.
fn contributor_payees(
    s: &mut Storage<'_>,
    datanet: U256,
    version: u64,
    contributions: &[U256],
    weights: usize,
) -> Result<Vec<(Address, Role)>> {
    if contributions.len() != weights {
        return Err(revert(ISettlement::WeightsMismatch {
            contributions: U256::from(contributions.len()),
            weights: U256::from(weights),
        }));
    }
    if contributions.is_empty() {
        let (owner, _) = datanet_info(s.host(), datanet)?
            .ok_or_else(|| ModuleError::Fatal(format!("datanet {datanet} of a receipt")))?;
        return Ok(vec![(owner, Role::DatanetOwner)]);
    }
    contributions
        .iter()
        .map(|&id| match contribution_info(s.host(), id)? {
            Some(c) if c.datanet_id == datanet && c.version.is_some_and(|v| v <= version) => {
                Ok((c.contributor, Role::Contributor))
            }
            _ => Err(revert(ISettlement::ContributionNotInVersion {
                contributionId: id,
                datanetId: datanet,
                version,
            })),
        })
        .collect()
}

fn accrue(
    s: &mut Storage<'_>,
    account: Address,
    model_id: U256,
    role: Role,
    amount: U256,
) -> Result<()> {
    if amount.is_zero() {
        return Ok(());
    }
    s.add(REWARDS.at(account), amount)?;
    emit(
        s.host(),
        &ISettlement::RewardAccrued {
            account,
            modelId: model_id,
            role,
            amount,
        },
    )
}

/// The signer of `digest`, if `signature` is a valid 65-byte `r . s . v` signature.
fn signer(signature: &[u8], digest: &B256) -> Option<Address> {
    Signature::from_raw(signature)
        .ok()?
        .recover_address_from_prehash(digest)
        .ok()
}

fn deployed(s: &mut Storage<'_>, model_id: U256) -> Result<ModelInfo> {
    let model = model_info(s.host(), model_id)?
        .ok_or_else(|| revert(ISettlement::UnknownModel { modelId: model_id }))?;
    if model.status != Status::Deployed {
        return Err(revert(ISettlement::ModelNotDeployed { modelId: model_id }));
    }
    Ok(model)
}

/// The fee for the token counts at the model's rates, and the platform fee it includes.
fn fee_for(
    s: &mut Storage<'_>,
    model: &ModelInfo,
    input_tokens: u64,
    output_tokens: u64,
) -> Result<(U256, U256)> {
    let platform_fee: U256 = s.get(PARAMS)?;
    let fee = fee::inference_fee(input_tokens, output_tokens, model.rates, platform_fee)
        .map_err(|_| revert(ISettlement::FeeOverflow {}))?;
    Ok((fee, platform_fee))
}

/// The parameters as the words they are stored in.
fn words(platform_fee: U256, shares: Shares) -> [U256; 4] {
    [
        platform_fee,
        U256::from(shares.creator),
        U256::from(shares.stakers),
        U256::from(shares.contributors),
    ]
}

fn set_params(s: &mut Storage<'_>, caller: Address, c: ISettlement::setParamsCall) -> Answer {
    if !is_governance(s.host(), caller)? {
        return Err(revert(ISettlement::NotGovernance { account: caller }));
    }
    let shares = Shares {
        creator: c.creatorShare,
        stakers: c.stakersShare,
        contributors: c.contributorsShare,
    };
    if let Err(FeeError::SharesDoNotSum(sum)) = shares.check() {
        return Err(revert(ISettlement::SharesDoNotSum {
            sum: U256::from(sum),
        }));
    }
    for (slot, value) in consecutive(PARAMS, words(c.platformFee, shares)) {
        s.set(Slot(slot), value)?;
    }
    emitted(
        s.host(),
        &ISettlement::ParamsSet {
            platformFee: c.platformFee,
            creatorShare: c.creatorShare,
            stakersShare: c.stakersShare,
            contributorsShare: c.contributorsShare,
        },
    )
}

fn read_shares(s: &mut Storage<'_>) -> Result<Shares> {
    Ok(Shares {
        creator: s.get(PARAMS.field(1))?,
        stakers: s.get(PARAMS.field(2))?,
        contributors: s.get(PARAMS.field(3))?,
    })
}

#[cfg(test)]
mod tests;
