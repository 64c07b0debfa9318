use crate::Result;
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolStruct;
use openledger_primitives::{ProtocolParams, addresses};
use proptest::prelude::*;

use super::{Settlement, challenge, challenge::AttributionOracle, domain};
use crate::{
    abi::{
        IFeedback, IModels,
        ISettlement::{self, InferenceOrder, InferenceReceipt, ReceiptRecord, ReceiptStatus, Role},
        IStaking,
    },
    models::Models,
    testing::{ALICE, BOB, CREATOR, Fixture, OPERATOR, OWNER, assert_reverts, milli},
};

/// A deployed model trained on version 1 of a datanet holding Alice's and Bob's contributions,
/// and a user with escrow.
struct Market {
    f: Fixture,
    user: PrivateKeySigner,
    datanet: U256,
    model: U256,
    alice: U256,
    bob: U256,
}

impl Market {
    /// Platform fee 0.5 OPEN; 0.64 OPEN per 1,000 prompt tokens, 0.1 per 1,000 generated.
    fn new() -> Self {
        Self::with(milli(500), (milli(640), milli(100)))
    }

    fn with(platform_fee: U256, rates: (U256, U256)) -> Self {
        let mut f = Fixture::with_params(ProtocolParams {
            platform_fee,
            ..ProtocolParams::default()
        });
        let datanet = f.datanet(OWNER, true);
        let alice = f.contribute(ALICE, datanet, 0xa1, 100);
        let bob = f.contribute(BOB, datanet, 0xb0, 100);
        f.approve(OWNER, datanet, vec![alice, bob]);
        let model = f.deployed_model(CREATOR, OPERATOR, datanet, 1, rates);
        let user = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x42)).unwrap();
        f.host.fund(user.address(), milli(1_000_000));
        f.settlement(user.address(), milli(100_000), &ISettlement::depositCall {})
            .unwrap();
        Self {
            f,
            user,
            datanet,
            model,
            alice,
            bob,
        }
    }

    fn order(&self, nonce: u64) -> InferenceOrder {
        InferenceOrder {
            user: self.user.address(),
            modelId: self.model,
            maxFee: milli(10_000),
            nonce: U256::from(nonce),
            expiry: self.f.host.timestamp + 600,
        }
    }

    fn sign(&self, order: &InferenceOrder, signer: &PrivateKeySigner) -> Vec<u8> {
        let digest = order.eip712_signing_hash(&domain(self.f.host.chain_id));
        signer.sign_hash_sync(&digest).unwrap().as_bytes().to_vec()
    }

    /// 1,000 prompt tokens and none generated, 25% Alice and 75% Bob.
    fn receipt(&self) -> InferenceReceipt {
        InferenceReceipt {
            inputTokens: 1_000,
            outputTokens: 0,
            promptHash: B256::repeat_byte(0x01),
            outputHash: B256::repeat_byte(0x02),
            artifactVersion: 1,
            datanetId: self.datanet,
            datanetVersion: 1,
            method: 1,
            contributionIds: vec![self.alice, self.bob],
            weights: vec![250_000, 750_000],
        }
    }

    fn settle(&mut self, order: InferenceOrder, receipt: InferenceReceipt) -> Result<U256> {
        let signature = self.sign(&order, &self.user);
        self.f.settlement(
            OPERATOR,
            U256::ZERO,
            &ISettlement::settleCall {
                order,
                signature: signature.into(),
                receipt,
            },
        )
    }

    fn rewards(&mut self, account: Address) -> U256 {
        self.f
            .settlement_view(&ISettlement::rewardsCall { account })
    }

    /// The user's escrow balance, unlocking or not.
    fn escrow(&mut self) -> U256 {
        self.escrow_of().balance
    }

    fn escrow_of(&mut self) -> ISettlement::escrowOfReturn {
        let account = self.user.address();
        self.f
            .settlement_view(&ISettlement::escrowOfCall { account })
    }
}

/// DESIGN §4's worked example, settled on-chain: 1.14 OPEN with a 0.5 OPEN platform fee.
#[test]
fn worked_example_a_quarter_of_the_influence_earns_0_032_open() {
    let mut m = Market::new();
    let treasury = m.f.host.balance_of(addresses::TREASURY);
    let fee = m.settle(m.order(1), m.receipt()).unwrap();
    assert_eq!(fee, milli(1_140));
    assert_eq!(m.rewards(ALICE), milli(32));
    assert_eq!(m.rewards(BOB), milli(96));
    // 0.448 as creator plus the stakers' 0.064: the model has no delegators yet.
    assert_eq!(m.rewards(CREATOR), milli(512));
    // The platform fee, less the validators' 10% of it for rating this inference.
    assert_eq!(
        m.f.host.balance_of(addresses::TREASURY) - treasury,
        milli(450)
    );
    assert_eq!(m.f.host.balance_of(addresses::FEEDBACK), milli(50));
    assert_eq!(m.escrow(), milli(100_000) - milli(1_140));
    let accrued = m.f.host.events::<ISettlement::RewardAccrued>();
    let roles: Vec<(Address, Role, U256)> = accrued
        .iter()
        .map(|e| (e.account, e.role, e.amount))
        .collect();
    assert_eq!(
        roles,
        vec![
            (CREATOR, Role::Creator, milli(448)),
            (CREATOR, Role::Stakers, milli(64)),
            (ALICE, Role::Contributor, milli(32)),
            (BOB, Role::Contributor, milli(96)),
        ]
    );
    let settled = &m.f.host.events::<ISettlement::Settled>()[0];
    assert_eq!((settled.fee, settled.user), (fee, m.user.address()));
}

#[test]
fn delegators_earn_the_stakers_share_through_staking() {
    let mut m = Market::new();
    let (carol, dave) = (Address::repeat_byte(7), Address::repeat_byte(8));
    let stake = |m: &mut Market, who, amount| {
        m.f.staking(who, amount, &IStaking::stakeCall { modelId: m.model })
            .unwrap()
    };
    stake(&mut m, carol, milli(300_000));
    stake(&mut m, dave, milli(100_000));
    m.settle(m.order(1), m.receipt()).unwrap();
    assert_eq!(m.rewards(CREATOR), milli(448));
    let pending = |m: &mut Market, account| {
        m.f.host.view(
            &crate::staking::Staking,
            &IStaking::pendingRewardsCall {
                modelId: m.model,
                account,
            },
        )
    };
    // 0.064 OPEN split 3:1.
    assert_eq!(pending(&mut m, carol), milli(48));
    assert_eq!(pending(&mut m, dave), milli(16));
    let before = m.f.host.balance_of(dave);
    m.f.staking(dave, U256::ZERO, &IStaking::claimCall { modelId: m.model })
        .unwrap();
    assert_eq!(m.f.host.balance_of(dave), before + milli(16));
}

#[test]
fn the_operator_minimum_grows_with_volume_and_settling_stops_below_it() {
    // 10 OPEN of platform fee per inference: 10% of that volume raises the minimum by 1 OPEN.
    let mut m = Market::with(milli(10_000), (U256::ZERO, U256::ZERO));
    let staking = crate::staking::Staking;
    let minimum = |m: &mut Market| {
        m.f.host
            .view(&staking, &IStaking::minimumStakeCall { modelId: m.model })
    };
    assert_eq!(minimum(&mut m), milli(10_000));
    let user = m.user.address();
    m.f.settlement(user, milli(500_000), &ISettlement::depositCall {})
        .unwrap();
    // The fixture staked 20 OPEN: ten inferences bring the minimum to 20.
    for nonce in 1..=10 {
        m.settle(m.order(nonce), m.receipt()).unwrap();
    }
    assert_eq!(minimum(&mut m), milli(20_000));
    m.settle(m.order(11), m.receipt()).unwrap();
    assert_reverts(
        m.settle(m.order(12), m.receipt()),
        ISettlement::StakeBelowMinimum {
            modelId: m.model,
            stake: milli(20_000),
            minimum: milli(21_000),
        },
    );
    m.f.staking(
        OPERATOR,
        milli(5_000),
        &IStaking::stakeOperatorCall { modelId: m.model },
    )
    .unwrap();
    m.settle(m.order(12), m.receipt()).unwrap();
    // A window later, the old volume has aged out of the trailing estimate.
    m.f.host.timestamp += 2 * 30 * 86_400;
    assert_eq!(minimum(&mut m), milli(10_000));
}

#[test]
fn flagged_contributors_lose_part_of_their_rewards_to_the_treasury() {
    let mut m = Market::new();
    let alice = m.alice;
    let flag = |m: &mut Market, who, contribution| {
        m.f.staking(
            who,
            U256::ZERO,
            &IStaking::flagContributionCall {
                contributionId: contribution,
                reason: "label noise".into(),
            },
        )
    };
    assert_reverts(
        flag(&mut m, BOB, alice),
        IStaking::NotCurator {
            contributionId: alice,
            account: BOB,
        },
    );
    // Three flagged contributions reach the default threshold.
    let more: Vec<U256> = (0..2)
        .map(|i| m.f.contribute(ALICE, m.datanet, 0xc0 + i, 10))
        .collect();
    flag(&mut m, OWNER, alice).unwrap();
    assert_reverts(
        flag(&mut m, OWNER, alice),
        IStaking::AlreadyFlagged {
            contributionId: alice,
        },
    );
    flag(&mut m, OWNER, more[0]).unwrap();
    m.settle(m.order(1), m.receipt()).unwrap();
    assert_eq!(m.rewards(ALICE), milli(32), "two flags cut nothing");
    flag(&mut m, crate::testing::ADMIN, more[1]).unwrap();
    let penalty = m.f.host.view(
        &crate::staking::Staking,
        &IStaking::penaltyOfCall { contributor: ALICE },
    );
    assert_eq!((penalty.score, penalty.cutPpm), (3, 500_000));
    let treasury = m.f.host.balance_of(addresses::TREASURY);
    m.settle(m.order(2), m.receipt()).unwrap();
    assert_eq!(m.rewards(ALICE), milli(32 + 16));
    assert_eq!(
        m.f.host.balance_of(addresses::TREASURY) - treasury,
        milli(450 + 16)
    );
    let cut = &m.f.host.events::<ISettlement::RewardCut>()[0];
    assert_eq!((cut.account, cut.amount), (ALICE, milli(16)));
}

/// Every settled inference becomes a receipt validators can rate, under its order hash, with
/// the feedback share of the platform fee as its reward.
#[test]
fn settling_records_a_receipt_for_validators() {
    let mut m = Market::new();
    let order = m.order(1);
    m.settle(order.clone(), m.receipt()).unwrap();
    let order_hash = order.eip712_hash_struct();
    assert_eq!(
        m.f.host.events::<ISettlement::Settled>()[0].orderHash,
        order_hash
    );
    let recorded = m.f.host.view(
        &crate::feedback::Feedback,
        &IFeedback::receiptCall {
            receiptId: order_hash,
        },
    );
    assert_eq!(recorded.modelId, m.model);
    assert_eq!(recorded.reward, milli(50));
    assert_eq!(recorded.settledAt, m.f.host.timestamp);
    assert_eq!(recorded.phase, IFeedback::Phase::Commit);
    let event = &m.f.host.events::<IFeedback::ReceiptRecorded>()[0];
    assert_eq!(
        (event.promptHash, event.outputHash),
        (m.receipt().promptHash, m.receipt().outputHash)
    );
}

#[test]
fn governance_sets_the_platform_fee_and_the_split() {
    let mut m = Market::new();
    let set = |shares: [u32; 3]| ISettlement::setParamsCall {
        platformFee: milli(100),
        creatorShare: shares[0],
        stakersShare: shares[1],
        contributorsShare: shares[2],
    };
    assert_reverts(
        m.f.settlement(CREATOR, U256::ZERO, &set([500_000, 100_000, 400_000])),
        ISettlement::NotGovernance { account: CREATOR },
    );
    assert_reverts(
        m.f.settlement(
            addresses::GOVERNOR,
            U256::ZERO,
            &set([500_000, 100_000, 300_000]),
        ),
        ISettlement::SharesDoNotSum {
            sum: U256::from(900_000),
        },
    );
    m.f.settlement(
        addresses::GOVERNOR,
        U256::ZERO,
        &set([500_000, 100_000, 400_000]),
    )
    .unwrap();
    // 0.64 OPEN after a 0.1 OPEN platform fee: 40% of it is the contributors', a quarter Alice's.
    assert_eq!(m.settle(m.order(1), m.receipt()).unwrap(), milli(740));
    assert_eq!(m.rewards(ALICE), milli(64));
    assert_eq!(m.rewards(CREATOR), milli(384));
}

#[test]
fn rewards_are_claimed_once() {
    let mut m = Market::new();
    m.settle(m.order(1), m.receipt()).unwrap();
    let before = m.f.host.balance_of(ALICE);
    let claimed =
        m.f.settlement(ALICE, U256::ZERO, &ISettlement::claimCall {})
            .unwrap();
    assert_eq!(claimed, milli(32));
    assert_eq!(m.f.host.balance_of(ALICE), before + milli(32));
    assert_eq!(m.rewards(ALICE), U256::ZERO);
    assert_reverts(
        m.f.settlement(ALICE, U256::ZERO, &ISettlement::claimCall {}),
        ISettlement::NothingToClaim {},
    );
}

#[test]
fn without_weights_the_pool_goes_to_the_datanet_owner() {
    let mut m = Market::new();
    let receipt = InferenceReceipt {
        contributionIds: vec![],
        weights: vec![],
        ..m.receipt()
    };
    m.settle(m.order(1), receipt).unwrap();
    assert_eq!(m.rewards(OWNER), milli(128));
    assert_eq!(
        m.f.host.events::<ISettlement::RewardAccrued>()[2].role,
        Role::DatanetOwner
    );
}

impl Market {
    fn escrow_call<C: alloy_sol_types::SolCall>(&mut self, call: &C) -> Result<C::Return> {
        let user = self.user.address();
        self.f.settlement(user, U256::ZERO, call)
    }
}

#[test]
fn escrow_leaves_only_after_its_unlock_delay() {
    let mut m = Market::new();
    let user = m.user.address();
    let withdraw = |amount: u64| ISettlement::withdrawCall {
        amount: milli(amount),
    };
    assert_reverts(
        m.escrow_call(&withdraw(1)),
        ISettlement::NotUnlocked {
            unlocked: U256::ZERO,
            required: milli(1),
        },
    );
    assert_reverts(
        m.escrow_call(&ISettlement::unlockCall {
            amount: milli(100_001),
        }),
        ISettlement::InsufficientEscrow {
            available: milli(100_000),
            required: milli(100_001),
        },
    );
    m.escrow_call(&ISettlement::unlockCall {
        amount: milli(40_000),
    })
    .unwrap();
    let delay = ProtocolParams::default().escrow_withdrawal_delay;
    let release = m.f.host.timestamp + delay;
    let escrow = m.escrow_of();
    assert_eq!(
        (escrow.balance, escrow.unlocking, escrow.releaseAt),
        (milli(100_000), milli(40_000), release)
    );
    m.f.host.timestamp = release - 1;
    assert_reverts(
        m.escrow_call(&withdraw(40_000)),
        ISettlement::StillLocked {
            releaseAt: release,
            timestamp: release - 1,
        },
    );
    m.f.host.timestamp = release;
    assert_reverts(
        m.escrow_call(&withdraw(40_001)),
        ISettlement::NotUnlocked {
            unlocked: milli(40_000),
            required: milli(40_001),
        },
    );
    let before = m.f.host.balance_of(user);
    m.escrow_call(&withdraw(30_000)).unwrap();
    assert_eq!(m.f.host.balance_of(user), before + milli(30_000));
    assert_eq!(m.escrow(), milli(70_000));
    assert_eq!(m.escrow_of().unlocking, milli(10_000));
    // Unlocking 0 cancels what is left.
    m.escrow_call(&ISettlement::unlockCall { amount: U256::ZERO })
        .unwrap();
    assert_reverts(
        m.escrow_call(&withdraw(1)),
        ISettlement::NotUnlocked {
            unlocked: U256::ZERO,
            required: milli(1),
        },
    );
    assert_reverts(
        m.f.settlement(user, U256::ZERO, &ISettlement::depositCall {}),
        ISettlement::ZeroAmount {},
    );
    assert_reverts(
        m.f.settlement(user, U256::from(1), &ISettlement::claimCall {}),
        ISettlement::NotPayable {},
    );
}

/// A completion served against escrow that its payer then unlocks is still paid: the escrow
/// stays until the delay has passed, and the withdrawal gets what settlements left.
#[test]
fn unlocking_escrow_still_pays_for_what_was_served() {
    let mut m = Market::new();
    m.escrow_call(&ISettlement::unlockCall {
        amount: milli(100_000),
    })
    .unwrap();
    let fee = m.settle(m.order(1), m.receipt()).unwrap();
    assert_eq!(fee, milli(1_140));
    m.f.host.timestamp += ProtocolParams::default().escrow_withdrawal_delay;
    let left = milli(100_000) - fee;
    assert_eq!(m.escrow_of().unlocking, left);
    assert_reverts(
        m.escrow_call(&ISettlement::withdrawCall {
            amount: milli(100_000),
        }),
        ISettlement::NotUnlocked {
            unlocked: left,
            required: milli(100_000),
        },
    );
    m.escrow_call(&ISettlement::withdrawCall { amount: left })
        .unwrap();
    assert_eq!(m.escrow(), U256::ZERO);
    // What the settlement took is not owed back out of the next deposit.
    let user = m.user.address();
    m.f.settlement(user, milli(5_000), &ISettlement::depositCall {})
        .unwrap();
    let escrow = m.escrow_of();
    assert_eq!((escrow.unlocking, escrow.releaseAt), (U256::ZERO, 0));
    assert_reverts(
        m.escrow_call(&ISettlement::withdrawCall { amount: milli(1) }),
        ISettlement::NotUnlocked {
            unlocked: U256::ZERO,
            required: milli(1),
        },
    );
}

/// A settlement that draws unlocking escrow down, then a deposit: the deposit is not
/// withdrawable at once in place of what the settlement took.
#[test]
fn a_deposit_after_a_settlement_drew_unlocking_escrow_is_locked() {
    let mut m = Market::new();
    m.escrow_call(&ISettlement::unlockCall {
        amount: milli(100_000),
    })
    .unwrap();
    let fee = m.settle(m.order(1), m.receipt()).unwrap();
    let user = m.user.address();
    m.f.settlement(user, milli(5_000), &ISettlement::depositCall {})
        .unwrap();
    m.f.host.timestamp += ProtocolParams::default().escrow_withdrawal_delay;
    let escrow = m.escrow_of();
    assert_eq!(escrow.balance, milli(105_000) - fee);
    assert_eq!(escrow.unlocking, milli(100_000) - fee);
    assert_reverts(
        m.escrow_call(&ISettlement::withdrawCall {
            amount: milli(100_000),
        }),
        ISettlement::NotUnlocked {
            unlocked: milli(100_000) - fee,
            required: milli(100_000),
        },
    );
}

#[test]
fn an_order_is_charged_once_before_it_expires_and_never_above_its_limit() {
    let mut m = Market::new();
    let user = m.user.address();
    m.settle(m.order(7), m.receipt()).unwrap();
    assert_reverts(
        m.settle(m.order(7), m.receipt()),
        ISettlement::NonceUsed {
            user,
            nonce: U256::from(7),
        },
    );
    let expiry = m.f.host.timestamp - 1;
    assert_reverts(
        m.settle(
            InferenceOrder {
                expiry,
                ..m.order(8)
            },
            m.receipt(),
        ),
        ISettlement::OrderExpired {
            expiry,
            timestamp: m.f.host.timestamp,
        },
    );
    assert_reverts(
        m.settle(
            InferenceOrder {
                maxFee: milli(1_139),
                ..m.order(8)
            },
            m.receipt(),
        ),
        ISettlement::FeeAboveMax {
            fee: milli(1_140),
            maxFee: milli(1_139),
        },
    );
    let poor = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x43)).unwrap();
    let order = InferenceOrder {
        user: poor.address(),
        ..m.order(8)
    };
    let signature = m.sign(&order, &poor);
    assert_reverts(
        m.f.settlement(
            OPERATOR,
            U256::ZERO,
            &ISettlement::settleCall {
                order,
                signature: signature.into(),
                receipt: m.receipt(),
            },
        ),
        ISettlement::InsufficientEscrow {
            available: U256::ZERO,
            required: milli(1_140),
        },
    );
    assert!(!m.f.settlement_view(&ISettlement::nonceUsedCall {
        user,
        nonce: U256::from(8)
    }));
}

#[test]
fn only_the_operator_settles_orders_the_user_signed() {
    let mut m = Market::new();
    let order = m.order(1);
    let signature = m.sign(&order, &m.user);
    let base_receipt = m.receipt();
    let settle = |signature: Vec<u8>| ISettlement::settleCall {
        order: order.clone(),
        signature: signature.into(),
        receipt: base_receipt.clone(),
    };
    assert_reverts(
        m.f.settlement(ALICE, U256::ZERO, &settle(signature.clone())),
        ISettlement::NotOperator {
            modelId: m.model,
            account: ALICE,
        },
    );
    let mallory = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x66)).unwrap();
    let forged = m.sign(&order, &mallory);
    assert_reverts(
        m.f.settlement(OPERATOR, U256::ZERO, &settle(forged)),
        ISettlement::BadSignature {},
    );
    assert_reverts(
        m.f.settlement(OPERATOR, U256::ZERO, &settle(vec![1, 2, 3])),
        ISettlement::BadSignature {},
    );
    // Signed for another model: the digest differs, so the signer does.
    let other = InferenceOrder {
        maxFee: milli(1),
        ..order.clone()
    };
    let wrong = m.sign(&other, &m.user);
    assert_reverts(
        m.f.settlement(OPERATOR, U256::ZERO, &settle(wrong)),
        ISettlement::BadSignature {},
    );
    m.f.settlement(OPERATOR, U256::ZERO, &settle(signature))
        .unwrap();
}

#[test]
fn receipts_attribute_only_to_the_trained_version() {
    let mut m = Market::new();
    let late = m.f.contribute(ALICE, m.datanet, 0xc0, 100);
    let base_receipt = m.receipt();
    let receipt = |ids: Vec<U256>, weights: Vec<u32>| InferenceReceipt {
        contributionIds: ids,
        weights,
        ..base_receipt.clone()
    };
    let pending = receipt(vec![m.alice, late], vec![500_000, 500_000]);
    assert_reverts(
        m.settle(m.order(1), pending),
        ISettlement::ContributionNotInVersion {
            contributionId: late,
            datanetId: m.datanet,
            version: 1,
        },
    );
    m.f.approve(OWNER, m.datanet, vec![late]);
    let newer = receipt(vec![late], vec![1_000_000]);
    assert_reverts(
        m.settle(m.order(1), newer),
        ISettlement::ContributionNotInVersion {
            contributionId: late,
            datanetId: m.datanet,
            version: 1,
        },
    );
    assert_reverts(
        m.settle(
            m.order(1),
            InferenceReceipt {
                datanetVersion: 2,
                ..m.receipt()
            },
        ),
        ISettlement::VersionNotTrained {
            datanetId: m.datanet,
            version: 2,
            trainedVersion: 1,
        },
    );
    let other = m.f.datanet(OWNER, true);
    assert_reverts(
        m.settle(
            m.order(1),
            InferenceReceipt {
                datanetId: other,
                ..m.receipt()
            },
        ),
        ISettlement::DatanetNotUsed {
            modelId: m.model,
            datanetId: other,
        },
    );
    assert_reverts(
        m.settle(m.order(1), receipt(vec![m.alice], vec![])),
        ISettlement::WeightsMismatch {
            contributions: U256::from(1),
            weights: U256::ZERO,
        },
    );
    assert_reverts(
        m.settle(
            m.order(1),
            receipt(vec![m.alice, m.bob], vec![250_000, 700_000]),
        ),
        ISettlement::WeightsDoNotSum {
            sum: U256::from(950_000),
        },
    );
    assert_eq!(m.rewards(CREATOR), U256::ZERO);
}

#[test]
fn receipts_name_the_artifact_version_that_served_them() {
    let mut m = Market::new();
    let late = m.f.contribute(ALICE, m.datanet, 0xa2, 100);
    m.f.approve(OWNER, m.datanet, vec![late]);
    let retrain = IModels::registerArtifactCall {
        modelId: m.model,
        adapterHash: B256::repeat_byte(0xbb),
        datanetVersions: vec![2],
        metricsHash: B256::ZERO,
    };
    m.f.models(CREATOR, &retrain).unwrap();
    let on_v2 = InferenceReceipt {
        artifactVersion: 2,
        datanetVersion: 2,
        contributionIds: vec![late],
        weights: vec![1_000_000],
        ..m.receipt()
    };
    // Registered but not deployed: nothing it served can be settled.
    assert_reverts(
        m.settle(m.order(1), on_v2.clone()),
        ISettlement::ArtifactNotDeployed {
            modelId: m.model,
            artifactVersion: 2,
            currentVersion: 1,
        },
    );
    let redeploy = IModels::deployCall {
        modelId: m.model,
        operator: OPERATOR,
        inputRatePer1k: milli(640),
        outputRatePer1k: milli(100),
    };
    m.f.models(CREATOR, &redeploy).unwrap();
    m.settle(m.order(1), on_v2.clone()).unwrap();
    // A completion served by version 1 before the switch still settles on version 1's data,
    // and only on it.
    m.settle(m.order(2), m.receipt()).unwrap();
    assert_reverts(
        m.settle(
            m.order(3),
            InferenceReceipt {
                artifactVersion: 1,
                ..on_v2.clone()
            },
        ),
        ISettlement::VersionNotTrained {
            datanetId: m.datanet,
            version: 2,
            trainedVersion: 1,
        },
    );
    for version in [0, 3] {
        assert_reverts(
            m.settle(
                m.order(3),
                InferenceReceipt {
                    artifactVersion: version,
                    ..on_v2.clone()
                },
            ),
            ISettlement::ArtifactNotDeployed {
                modelId: m.model,
                artifactVersion: version,
                currentVersion: 2,
            },
        );
    }
    // Versions 3 and 4 registered, and the model deployed again straight to 4: version 3 never
    // served a completion, so no receipt may name it.
    for byte in [0xcc, 0xdd] {
        let next = IModels::registerArtifactCall {
            adapterHash: B256::repeat_byte(byte),
            ..retrain.clone()
        };
        m.f.models(CREATOR, &next).unwrap();
    }
    m.f.models(CREATOR, &redeploy).unwrap();
    assert_reverts(
        m.settle(
            m.order(3),
            InferenceReceipt {
                artifactVersion: 3,
                ..on_v2.clone()
            },
        ),
        ISettlement::ArtifactNotDeployed {
            modelId: m.model,
            artifactVersion: 3,
            currentVersion: 4,
        },
    );
    for version in [2, 4] {
        m.settle(
            m.order(3 + version),
            InferenceReceipt {
                artifactVersion: version,
                ..on_v2.clone()
            },
        )
        .unwrap();
    }
    let settled = m.f.host.events::<ISettlement::Settled>();
    let served: Vec<u64> = settled.iter().map(|e| e.artifactVersion).collect();
    assert_eq!(served, vec![2, 1, 2, 4]);
}

#[test]
fn only_deployed_models_settle() {
    let mut m = Market::new();
    m.f.models(CREATOR, &IModels::retireCall { modelId: m.model })
        .unwrap();
    assert_reverts(
        m.settle(m.order(1), m.receipt()),
        ISettlement::ModelNotDeployed { modelId: m.model },
    );
    assert_reverts(
        m.settle(
            InferenceOrder {
                modelId: U256::from(99),
                ..m.order(1)
            },
            m.receipt(),
        ),
        ISettlement::UnknownModel {
            modelId: U256::from(99),
        },
    );
    assert_eq!(
        m.f.host
            .view(&Models, &IModels::getModelCall { modelId: m.model })
            .status,
        IModels::Status::Retired
    );
}

#[test]
fn a_batch_settles_all_or_nothing() {
    let mut m = Market::new();
    let one = |m: &Market, nonce: u64| ISettlement::Settlement {
        order: m.order(nonce),
        signature: m.sign(&m.order(nonce), &m.user).into(),
        receipt: m.receipt(),
    };
    let good = vec![one(&m, 1), one(&m, 2)];
    let total =
        m.f.settlement(
            OPERATOR,
            U256::ZERO,
            &ISettlement::settleBatchCall { settlements: good },
        )
        .unwrap();
    assert_eq!(total, milli(2_280));
    assert_eq!(m.rewards(ALICE), milli(64));
    let reused = vec![one(&m, 3), one(&m, 1)];
    assert_reverts(
        m.f.settlement(
            OPERATOR,
            U256::ZERO,
            &ISettlement::settleBatchCall {
                settlements: reused,
            },
        ),
        ISettlement::NonceUsed {
            user: m.user.address(),
            nonce: U256::from(1),
        },
    );
    assert_eq!(m.rewards(ALICE), milli(64));
    assert_reverts(
        m.f.settlement(
            OPERATOR,
            U256::ZERO,
            &ISettlement::settleBatchCall {
                settlements: vec![],
            },
        ),
        ISettlement::EmptyBatch {},
    );
}

#[test]
fn views_quote_the_formula_and_the_domain() {
    let mut m = Market::new();
    let quote = m.f.settlement_view(&ISettlement::quoteCall {
        modelId: m.model,
        inputTokens: 1_500,
        outputTokens: 2_000,
    });
    assert_eq!(quote, milli(960) + milli(200) + milli(500));
    let order = m.order(1);
    let digest = m.f.settlement_view(&ISettlement::orderDigestCall {
        order: order.clone(),
    });
    assert_eq!(
        digest,
        order.eip712_signing_hash(&domain(m.f.host.chain_id))
    );
    let shares = m.f.settlement_view(&ISettlement::sharesCall {});
    assert_eq!(
        (shares.creator, shares.stakers, shares.contributors),
        (700_000, 100_000, 200_000)
    );
}

/// Weights in ppm summing to one million.
fn weights(n: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..1_000, n).prop_map(|parts| {
        let total: u64 = parts.iter().map(|&p| u64::from(p)).sum();
        let mut weights: Vec<u32> = parts
            .iter()
            .map(|&p| (u64::from(p) * 1_000_000 / total) as u32)
            .collect();
        let assigned: u32 = weights.iter().sum();
        weights[0] += 1_000_000 - assigned;
        weights
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the rates, token counts and weights, a settlement moves exactly the fee out of
    /// escrow, and the module's balance stays the sum of escrows and unclaimed rewards.
    #[test]
    fn settlement_conserves_value_to_the_wei(
        platform in 0u64..1_000_000_000_000,
        input_rate in 0u64..10_000_000_000_000,
        output_rate in 0u64..10_000_000_000_000,
        input_tokens in 0u64..100_000,
        output_tokens in 0u64..100_000,
        w in weights(2),
    ) {
        let mut m = Market::with(U256::from(platform), (U256::from(input_rate), U256::from(output_rate)));
        let treasury = m.f.host.balance_of(addresses::TREASURY);
        let receipt = InferenceReceipt {
            inputTokens: input_tokens,
            outputTokens: output_tokens,
            weights: w,
            ..m.receipt()
        };
        let fee = m.settle(m.order(1), receipt).unwrap();
        let paid_out = m.f.host.balance_of(addresses::TREASURY) - treasury
            + m.f.host.balance_of(addresses::FEEDBACK);
        let accrued = [ALICE, BOB, CREATOR].map(|a| m.rewards(a));
        prop_assert_eq!(paid_out + accrued.iter().copied().sum::<U256>(), fee);
        prop_assert_eq!(m.escrow(), milli(100_000) - fee);
        prop_assert_eq!(
            m.f.host.balance_of(addresses::SETTLEMENT),
            m.escrow() + accrued.iter().copied().sum::<U256>()
        );
    }
}

/// An oracle that answers the same weights for any text, standing for the node's span index.
#[derive(Debug)]
struct FixedOracle(Vec<(U256, u32)>);

impl AttributionOracle for FixedOracle {
    fn span_weights(&self, _: U256, _: u64, _: &str, _: &str) -> Result<Vec<(U256, u32)>, String> {
        Ok(self.0.clone())
    }
}

const PROMPT: &str = "Patients with triza";
const OUTPUT: &str = " should avoid Zataine.";
const CHALLENGER: Address = Address::repeat_byte(7);

impl Market {
    /// A market whose node recomputes `weights` for every challenged text.
    fn with_oracle(weights: Vec<(U256, u32)>) -> Self {
        let mut m = Self::new();
        m.f.settlement = Settlement::with_oracle(Arc::new(FixedOracle(weights)));
        m.f.host.fund(CHALLENGER, milli(10_000));
        m
    }

    /// Settles the worked example's receipt for [`PROMPT`] and [`OUTPUT`]; returns its id and
    /// record, as the ReceiptRecorded event gives them.
    fn settle_texts(&mut self, nonce: u64) -> (B256, ReceiptRecord) {
        let receipt = InferenceReceipt {
            promptHash: keccak256(PROMPT),
            outputHash: keccak256(OUTPUT),
            ..self.receipt()
        };
        self.settle(self.order(nonce), receipt).unwrap();
        let recorded = self
            .f
            .host
            .events::<ISettlement::ReceiptRecorded>()
            .pop()
            .unwrap();
        (recorded.receiptId, recorded.record)
    }

    fn challenge(
        &mut self,
        id: B256,
        record: &ReceiptRecord,
        bond: U256,
        output: &str,
    ) -> Result<bool> {
        let call = ISettlement::challengeCall {
            receiptId: id,
            record: record.clone(),
            prompt: PROMPT.into(),
            output: output.into(),
        };
        self.f.settlement(CHALLENGER, bond, &call)
    }

    fn status(&mut self, id: B256) -> ReceiptStatus {
        let call = ISettlement::receiptStatusCall { receiptId: id };
        self.f.settlement_view(&call).status
    }
}

#[test]
fn a_challenge_of_tampered_weights_slashes_the_operator_and_repays_the_contributors() {
    // The texts are all Alice's; the operator settled them 25% Alice, 75% Bob.
    let mut m = Market::with_oracle(Vec::new());
    let alice = m.alice;
    m.f.settlement = Settlement::with_oracle(Arc::new(FixedOracle(vec![(alice, 1_000_000)])));
    let (id, record) = m.settle_texts(1);
    assert_eq!(record.pool, milli(128));
    assert_eq!(m.status(id), ReceiptStatus::Settled);
    let stake_call = IStaking::operatorStakeCall {
        modelId: m.model,
        operator: OPERATOR,
    };
    let stake = m.f.host.view(&crate::staking::Staking, &stake_call);
    let (challenger, treasury) = (
        m.f.host.balance_of(CHALLENGER),
        m.f.host.balance_of(addresses::TREASURY),
    );

    assert!(m.challenge(id, &record, milli(1_000), OUTPUT).unwrap());

    let slashed = stake / U256::from(10);
    assert_eq!(
        m.f.host.view(&crate::staking::Staking, &stake_call),
        stake - slashed
    );
    // Alice's quarter from the settlement, then the whole pool again from the slash.
    assert_eq!(m.rewards(ALICE), milli(32) + milli(128));
    assert_eq!(m.rewards(BOB), milli(96));
    let rest = slashed - milli(128);
    let resettled = m.f.host.events::<ISettlement::Resettled>().pop().unwrap();
    assert_eq!(
        (
            resettled.slashed,
            resettled.toContributors,
            resettled.toChallenger
        ),
        (slashed, milli(128), rest / U256::from(2))
    );
    assert_eq!(
        resettled.toChallenger + resettled.toTreasury + resettled.toContributors,
        slashed
    );
    // The bond came back, with half of what the slash left after re-paying the pool.
    assert_eq!(
        m.f.host.balance_of(CHALLENGER),
        challenger + rest / U256::from(2)
    );
    assert_eq!(
        m.f.host.balance_of(addresses::TREASURY),
        treasury + resettled.toTreasury
    );
    assert_eq!(m.status(id), ReceiptStatus::Corrected);
    assert_reverts(
        m.challenge(id, &record, milli(1_000), OUTPUT),
        ISettlement::AlreadyResolved {
            receiptId: id,
            status: ReceiptStatus::Corrected,
        },
    );
}

#[test]
fn a_challenge_of_right_weights_loses_its_bond_and_verifies_the_receipt() {
    let mut m = Market::with_oracle(Vec::new());
    // The node recomputes the settled weights, listed in another order.
    let (bob, alice) = (m.bob, m.alice);
    m.f.settlement = Settlement::with_oracle(Arc::new(FixedOracle(vec![
        (bob, 750_000),
        (alice, 250_000),
    ])));
    let (id, record) = m.settle_texts(1);
    let (challenger, treasury) = (
        m.f.host.balance_of(CHALLENGER),
        m.f.host.balance_of(addresses::TREASURY),
    );
    assert!(!m.challenge(id, &record, milli(1_500), OUTPUT).unwrap());
    assert_eq!(m.f.host.balance_of(CHALLENGER), challenger - milli(1_500));
    assert_eq!(
        m.f.host.balance_of(addresses::TREASURY),
        treasury + milli(1_500)
    );
    assert_eq!((m.rewards(ALICE), m.rewards(BOB)), (milli(32), milli(96)));
    assert_eq!(m.status(id), ReceiptStatus::Verified);
    let challenged = m.f.host.events::<ISettlement::Challenged>().pop().unwrap();
    assert!(!challenged.upheld);
    assert_eq!(
        challenged.settledWeightsHash,
        challenged.recomputedWeightsHash
    );
}

#[test]
fn challenges_are_refused_with_a_clear_reason_and_change_nothing() {
    let mut m = Market::with_oracle(Vec::new());
    let (id, record) = m.settle_texts(1);
    let bond = milli(1_000);
    let balance = m.f.host.balance_of(CHALLENGER);
    assert_reverts(
        m.challenge(B256::repeat_byte(9), &record, bond, OUTPUT),
        ISettlement::UnknownReceipt {
            receiptId: B256::repeat_byte(9),
        },
    );
    assert_reverts(
        m.challenge(id, &record, milli(999), OUTPUT),
        ISettlement::BondTooLow {
            bond: milli(999),
            required: milli(1_000),
        },
    );
    let forged = ReceiptRecord {
        pool: milli(1_000_000),
        ..record.clone()
    };
    assert_reverts(
        m.challenge(id, &forged, bond, OUTPUT),
        ISettlement::RecordMismatch { receiptId: id },
    );
    assert_reverts(
        m.challenge(id, &record, bond, "another answer"),
        ISettlement::TextMismatch {
            promptHash: record.promptHash,
            outputHash: record.outputHash,
        },
    );
    assert_reverts(
        m.challenge(
            id,
            &record,
            bond,
            &"x".repeat(challenge::MAX_CHALLENGE_TEXT),
        ),
        ISettlement::TextTooLong {
            length: U256::from(challenge::MAX_CHALLENGE_TEXT + PROMPT.len()),
            max: U256::from(challenge::MAX_CHALLENGE_TEXT),
        },
    );
    m.f.settlement = Settlement::default();
    assert_reverts(
        m.challenge(id, &record, bond, OUTPUT),
        ISettlement::AttributionUnavailable {
            datanetId: m.datanet,
            version: 1,
            reason: "this node runs no attribution oracle".into(),
        },
    );
    m.f.host.timestamp += challenge::CHALLENGE_WINDOW + 1;
    m.f.settlement = Settlement::with_oracle(Arc::new(FixedOracle(Vec::new())));
    let (_, settled_at, _) = {
        let call = ISettlement::receiptStatusCall { receiptId: id };
        let r = m.f.settlement_view(&call);
        (r.status, r.settledAt, r.recordHash)
    };
    assert_reverts(
        m.challenge(id, &record, bond, OUTPUT),
        ISettlement::ChallengeWindowClosed {
            receiptId: id,
            deadline: settled_at + challenge::CHALLENGE_WINDOW,
        },
    );
    assert_eq!(m.f.host.balance_of(CHALLENGER), balance);
    assert_eq!(m.status(id), ReceiptStatus::Settled);
}

#[test]
fn gradient_attributed_receipts_are_not_span_challenged() {
    let mut m = Market::with_oracle(Vec::new());
    let receipt = InferenceReceipt {
        method: 2,
        promptHash: keccak256(PROMPT),
        outputHash: keccak256(OUTPUT),
        ..m.receipt()
    };
    m.settle(m.order(1), receipt).unwrap();
    let recorded =
        m.f.host
            .events::<ISettlement::ReceiptRecorded>()
            .pop()
            .unwrap();
    assert_reverts(
        m.challenge(recorded.receiptId, &recorded.record, milli(1_000), OUTPUT),
        ISettlement::NotSpanAttributed { method: 2 },
    );
}

mod training {
    use super::*;
    use crate::abi::ISettlement::{HoldStatus, TrainingOrder};

    const TRAINER: Address = Address::repeat_byte(8);

    impl Market {
        fn training_order(&self, nonce: u64, max_fee: U256) -> TrainingOrder {
            TrainingOrder {
                payer: self.user.address(),
                trainer: TRAINER,
                modelId: self.model,
                maxFee: max_fee,
                nonce: U256::from(nonce),
                expiry: self.f.host.timestamp + 3_600,
            }
        }

        fn hold(
            &mut self,
            order: &TrainingOrder,
            signer: &PrivateKeySigner,
            amount: U256,
        ) -> Result<B256> {
            let digest = order.eip712_signing_hash(&domain(self.f.host.chain_id));
            let signature = signer.sign_hash_sync(&digest).unwrap().as_bytes().to_vec();
            let call = ISettlement::holdTrainingCall {
                order: order.clone(),
                signature: signature.into(),
                amount,
            };
            self.f.settlement(order.trainer, U256::ZERO, &call)
        }

        fn held(&mut self, id: B256) -> ISettlement::TrainingHold {
            let call = ISettlement::trainingHoldCall { holdId: id };
            self.f.settlement_view(&call)
        }

        fn retrain(&mut self) {
            let call = IModels::registerArtifactCall {
                modelId: self.model,
                adapterHash: B256::repeat_byte(0xbb),
                datanetVersions: vec![1],
                metricsHash: B256::ZERO,
            };
            self.f.models(CREATOR, &call).unwrap();
        }
    }

    #[test]
    fn a_training_fee_is_held_from_escrow_and_paid_once_a_new_artifact_is_registered() {
        let mut m = Market::new();
        let order = m.training_order(1, milli(5_000));
        let module = m.f.host.balance_of(addresses::SETTLEMENT);
        let id = m.hold(&order, &m.user.clone(), milli(4_000)).unwrap();
        assert_eq!(m.escrow(), milli(96_000));
        let held = m.held(id);
        assert_eq!((held.amount, held.status), (milli(4_000), HoldStatus::Held));
        let pay = ISettlement::payTrainingCall { holdId: id };
        assert_reverts(
            m.f.settlement(TRAINER, U256::ZERO, &pay),
            ISettlement::NothingTrained {
                holdId: id,
                modelId: m.model,
            },
        );
        m.retrain();
        assert_reverts(
            m.f.settlement(CREATOR, U256::ZERO, &pay),
            ISettlement::NotTrainer {
                holdId: id,
                account: CREATOR,
            },
        );
        // One artifact pays one hold: another hold taken before it waits for its own.
        let other = m.training_order(2, milli(1_000));
        let other = m.hold(&other, &m.user.clone(), milli(1_000)).unwrap();
        let trainer = m.f.host.balance_of(TRAINER);
        m.f.settlement(TRAINER, U256::ZERO, &pay).unwrap();
        let pay_other = ISettlement::payTrainingCall { holdId: other };
        assert_reverts(
            m.f.settlement(TRAINER, U256::ZERO, &pay_other),
            ISettlement::NothingTrained {
                holdId: other,
                modelId: m.model,
            },
        );
        assert_eq!(m.f.host.balance_of(TRAINER), trainer + milli(4_000));
        assert_eq!(
            m.f.host.balance_of(addresses::SETTLEMENT),
            module - milli(4_000)
        );
        assert_eq!(m.held(id).status, HoldStatus::Paid);
        assert_reverts(
            m.f.settlement(TRAINER, U256::ZERO, &pay),
            ISettlement::HoldNotOpen {
                holdId: id,
                status: HoldStatus::Paid,
            },
        );
        let refund = ISettlement::refundTrainingCall { holdId: id };
        assert_reverts(
            m.f.settlement(TRAINER, U256::ZERO, &refund),
            ISettlement::HoldNotOpen {
                holdId: id,
                status: HoldStatus::Paid,
            },
        );
    }

    #[test]
    fn a_hold_is_refunded_by_its_trainer_or_after_expiry_by_its_payer() {
        let mut m = Market::new();
        let user = m.user.address();
        let first = m.training_order(1, milli(5_000));
        let id = m.hold(&first, &m.user.clone(), milli(5_000)).unwrap();
        let refund = ISettlement::refundTrainingCall { holdId: id };
        m.f.settlement(TRAINER, U256::ZERO, &refund).unwrap();
        assert_eq!(m.escrow(), milli(100_000));
        assert_eq!(m.held(id).status, HoldStatus::Refunded);

        let second = m.training_order(2, milli(5_000));
        let id = m.hold(&second, &m.user.clone(), milli(5_000)).unwrap();
        let refund = ISettlement::refundTrainingCall { holdId: id };
        assert_reverts(
            m.f.settlement(user, U256::ZERO, &refund),
            ISettlement::HoldNotExpired {
                holdId: id,
                expiry: second.expiry,
            },
        );
        assert_reverts(
            m.f.settlement(OWNER, U256::ZERO, &refund),
            ISettlement::NotTrainer {
                holdId: id,
                account: OWNER,
            },
        );
        m.f.host.timestamp = second.expiry + 1;
        m.f.settlement(user, U256::ZERO, &refund).unwrap();
        assert_eq!(m.escrow(), milli(100_000));
    }

    #[test]
    fn a_training_order_holds_only_what_its_payer_signed_for_once() {
        let mut m = Market::new();
        let user = m.user.clone();
        let order = m.training_order(1, milli(5_000));
        let id = order.eip712_signing_hash(&domain(m.f.host.chain_id));
        let stranger = PrivateKeySigner::random();
        assert_reverts(
            m.hold(&order, &stranger, milli(1_000)),
            ISettlement::BadSignature {},
        );
        assert_reverts(
            m.hold(&order, &user, U256::ZERO),
            ISettlement::ZeroAmount {},
        );
        assert_reverts(
            m.hold(&order, &user, milli(5_001)),
            ISettlement::FeeAboveMax {
                fee: milli(5_001),
                maxFee: milli(5_000),
            },
        );
        let mut elsewhere = order.clone();
        elsewhere.trainer = OPERATOR;
        let signature = user
            .sign_hash_sync(&elsewhere.eip712_signing_hash(&domain(m.f.host.chain_id)))
            .unwrap();
        let call = ISettlement::holdTrainingCall {
            order: elsewhere.clone(),
            signature: signature.as_bytes().to_vec().into(),
            amount: milli(1),
        };
        let other_id = elsewhere.eip712_signing_hash(&domain(m.f.host.chain_id));
        assert_reverts(
            m.f.settlement(TRAINER, U256::ZERO, &call),
            ISettlement::NotTrainer {
                holdId: other_id,
                account: TRAINER,
            },
        );
        // Escrow that is unlocking pays for nothing new.
        m.escrow_call(&ISettlement::unlockCall {
            amount: milli(97_000),
        })
        .unwrap();
        assert_reverts(
            m.hold(&order, &user, milli(4_000)),
            ISettlement::InsufficientEscrow {
                available: milli(3_000),
                required: milli(4_000),
            },
        );
        assert_eq!(m.hold(&order, &user, milli(3_000)).unwrap(), id);
        assert_reverts(
            m.hold(&order, &user, milli(3_000)),
            ISettlement::NonceUsed {
                user: user.address(),
                nonce: U256::from(1),
            },
        );
        let mut late = m.training_order(2, milli(5_000));
        late.expiry = m.f.host.timestamp - 1;
        assert_reverts(
            m.hold(&late, &user, milli(1)),
            ISettlement::OrderExpired {
                expiry: late.expiry,
                timestamp: m.f.host.timestamp,
            },
        );
    }
}
