use alloy_primitives::{Address, U256};
use openledger_chain::NativeModule;
use openledger_primitives::addresses;
use proptest::prelude::*;

use super::Staking;
use crate::{
    abi::{IModels::Status, IStaking},
    testing::{ADMIN, CREATOR, Fixture, OPERATOR, account, assert_reverts, milli},
};

/// A deployed model whose operator staked 20 OPEN.
fn market() -> (Fixture, U256) {
    let mut f = Fixture::new();
    let datanet = f.datanet(account(1), true);
    let c = f.contribute(account(2), datanet, 0x01, 100);
    f.approve(account(1), datanet, vec![c]);
    let model = f.deployed_model(CREATOR, OPERATOR, datanet, 1, (milli(1), milli(1)));
    (f, model)
}

fn position(f: &mut Fixture, model: U256, who: Address) -> IStaking::Position {
    f.host.view(
        &Staking,
        &IStaking::positionOfCall {
            modelId: model,
            account: who,
        },
    )
}

fn stake(f: &mut Fixture, model: U256, who: Address, amount: U256) {
    f.staking(who, amount, &IStaking::stakeCall { modelId: model })
        .unwrap();
}

fn unstake(f: &mut Fixture, model: U256, who: Address, amount: U256) {
    f.staking(
        who,
        U256::ZERO,
        &IStaking::requestUnstakeCall {
            modelId: model,
            amount,
        },
    )
    .unwrap();
}

/// Settlement's call that shares `reward` among the model's delegators.
fn reward(f: &mut Fixture, model: U256, reward: U256) {
    f.host.fund(addresses::SETTLEMENT, reward);
    f.staking(
        addresses::SETTLEMENT,
        reward,
        &IStaking::notifyFeeCall {
            modelId: model,
            fee: reward,
        },
    )
    .unwrap();
}

#[test]
fn unstaked_open_waits_for_the_unbonding_period() {
    let (mut f, model) = market();
    let alice = account(3);
    stake(&mut f, model, alice, milli(100_000));
    unstake(&mut f, model, alice, milli(40_000));
    let p = position(&mut f, model, alice);
    assert_eq!((p.bonded, p.unbonding), (milli(60_000), milli(40_000)));
    let withdraw = IStaking::withdrawUnbondedCall { modelId: model };
    assert_reverts(
        f.staking(alice, U256::ZERO, &withdraw),
        IStaking::StillUnbonding {
            releaseAt: p.releaseAt,
            timestamp: f.host.timestamp,
        },
    );
    assert_reverts(
        f.staking(
            alice,
            U256::ZERO,
            &IStaking::requestUnstakeCall {
                modelId: model,
                amount: milli(60_001),
            },
        ),
        IStaking::InsufficientStake {
            available: milli(60_000),
            required: milli(60_001),
        },
    );
    f.host.timestamp = p.releaseAt;
    let before = f.host.balance_of(alice);
    let paid = f.staking(alice, U256::ZERO, &withdraw).unwrap();
    assert_eq!(paid, milli(40_000));
    assert_eq!(f.host.balance_of(alice), before + paid);
    assert_reverts(
        f.staking(alice, U256::ZERO, &withdraw),
        IStaking::NothingUnbonding {},
    );
}

/// Operator 20 OPEN; Alice 300 bonded; Bob 100 bonded and 100 unbonding. Slashing half of the
/// 520 takes the operator's 20 first, then 240 from the delegators in proportion to their 500.
#[test]
fn slashing_takes_the_operator_first_then_delegators_pro_rata_and_conserves_open() {
    let (mut f, model) = market();
    let (alice, bob, reporter) = (account(3), account(4), account(7));
    stake(&mut f, model, alice, milli(300_000));
    stake(&mut f, model, bob, milli(200_000));
    unstake(&mut f, model, bob, milli(100_000));
    let held = f.host.balance_of(addresses::STAKING);
    let treasury = f.host.balance_of(addresses::TREASURY);
    let slash = IStaking::slashCall {
        modelId: model,
        ppm: 500_000,
        reason: "harmful output".into(),
        beneficiary: reporter,
    };
    assert_reverts(
        f.staking(alice, U256::ZERO, &slash),
        IStaking::NotGovernance { account: alice },
    );
    f.staking(ADMIN, U256::ZERO, &slash).unwrap();

    let event = &f.host.events::<IStaking::Slashed>()[0];
    assert_eq!(event.fromOperator, milli(20_000));
    assert_eq!(event.fromDelegators, milli(240_000));
    assert_eq!(event.toBeneficiary, milli(26_000));
    assert_eq!(event.toTreasury, milli(234_000));
    assert_eq!(f.host.balance_of(reporter), milli(1_000_000 + 26_000));
    assert_eq!(
        f.host.balance_of(addresses::TREASURY) - treasury,
        milli(234_000)
    );
    assert_eq!(f.host.balance_of(addresses::STAKING), held - milli(260_000));
    // Every delegator keeps 1 - 240/500 of what it had, bonded or unbonding.
    let keep = |amount: u64| milli(amount) * U256::from(260) / U256::from(500);
    let a = position(&mut f, model, alice);
    let b = position(&mut f, model, bob);
    assert_eq!(a.bonded, keep(300_000));
    assert_eq!(b.bonded, keep(100_000));
    assert_eq!(b.unbonding, keep(100_000));
    let stake = f
        .host
        .view(&Staking, &IStaking::modelStakeCall { modelId: model });
    assert_eq!(stake.operatorStake, U256::ZERO);
    assert_eq!(stake.delegated + stake.unbonding, milli(260_000));
    // The operator's stake is under the minimum now: the model is Slashed.
    let status = f.model_status(model);
    assert_eq!(status, Status::Slashed);
    assert_reverts(
        f.staking(alice, milli(1), &IStaking::stakeCall { modelId: model }),
        IStaking::ModelClosed { modelId: model },
    );
    // Unbonding stake was slashed too, and what is left is paid out in full.
    f.host.timestamp = b.releaseAt;
    let paid = f
        .staking(
            bob,
            U256::ZERO,
            &IStaking::withdrawUnbondedCall { modelId: model },
        )
        .unwrap();
    assert_eq!(paid, keep(100_000));
}

#[test]
fn a_light_slash_leaves_a_well_staked_model_deployed() {
    let (mut f, model) = market();
    f.staking(
        OPERATOR,
        milli(80_000),
        &IStaking::stakeOperatorCall { modelId: model },
    )
    .unwrap();
    let slash = IStaking::slashCall {
        modelId: model,
        ppm: 100_000,
        reason: String::new(),
        beneficiary: Address::ZERO,
    };
    let treasury = f.host.balance_of(addresses::TREASURY);
    f.staking(ADMIN, U256::ZERO, &slash).unwrap();
    // 10% of 100 OPEN, all to the treasury without a beneficiary.
    assert_eq!(
        f.host.balance_of(addresses::TREASURY) - treasury,
        milli(10_000)
    );
    let status = f.model_status(model);
    assert_eq!(status, Status::Deployed);
}

#[test]
fn rewards_and_notifications_come_only_from_settlement() {
    let (mut f, model) = market();
    assert_reverts(
        f.staking(
            account(3),
            milli(1),
            &IStaking::notifyFeeCall {
                modelId: model,
                fee: milli(1),
            },
        ),
        IStaking::NotSettlement {
            account: account(3),
        },
    );
    // Only a challenge upheld by Settlement slashes an operator without governance.
    assert_reverts(
        f.staking(
            account(3),
            U256::ZERO,
            &IStaking::slashOperatorCall {
                modelId: model,
                ppm: 100_000,
                reason: "mine".into(),
            },
        ),
        IStaking::NotSettlement {
            account: account(3),
        },
    );
    assert_reverts(
        f.staking(
            account(3),
            U256::ZERO,
            &IStaking::claimCall { modelId: model },
        ),
        IStaking::NothingToClaim {},
    );
}

#[derive(Debug, Clone)]
enum Op {
    Stake(usize, u64),
    Unstake(usize, u8),
    Reward(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 1..1_000_000u64).prop_map(|(who, amount)| Op::Stake(who, amount)),
        (0..4usize, 1..=100u8).prop_map(|(who, pct)| Op::Unstake(who, pct)),
        (1..10_000_000u64).prop_map(Op::Reward),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The accumulator pays every staker what a loop over all stakers would have, to within one
    /// wei per reward, and never more than was distributed.
    #[test]
    fn reward_per_share_matches_a_naive_loop(ops in proptest::collection::vec(op(), 1..40)) {
        let (mut f, model) = market();
        let stakers: Vec<Address> = (3..7).map(account).collect();
        let mut bonded = [U256::ZERO; 4];
        let mut naive = [U256::ZERO; 4];
        let mut rewards = 0u64;
        let mut total = U256::ZERO;
        for op in ops {
            match op {
                Op::Stake(who, amount) => {
                    stake(&mut f, model, stakers[who], U256::from(amount));
                    bonded[who] += U256::from(amount);
                }
                Op::Unstake(who, pct) => {
                    let amount = position(&mut f, model, stakers[who]).bonded * U256::from(pct) / U256::from(100);
                    if !amount.is_zero() {
                        unstake(&mut f, model, stakers[who], amount);
                        bonded[who] = position(&mut f, model, stakers[who]).bonded;
                    }
                }
                Op::Reward(amount) => {
                    let sum: U256 = bonded.iter().copied().sum();
                    if sum.is_zero() {
                        continue;
                    }
                    reward(&mut f, model, U256::from(amount));
                    rewards += 1;
                    total += U256::from(amount);
                    for who in 0..4 {
                        naive[who] += U256::from(amount) * bonded[who] / sum;
                    }
                }
            }
        }
        let mut paid = U256::ZERO;
        for who in 0..4 {
            let got = position(&mut f, model, stakers[who]).pendingRewards;
            let diff = if got > naive[who] { got - naive[who] } else { naive[who] - got };
            // Share rounding on unstake moves a stake by at most a wei, and each reward floors.
            prop_assert!(diff <= U256::from(2 * rewards + 2), "staker {who}: {got} vs {}", naive[who]);
            paid += got;
        }
        prop_assert!(paid <= total, "paid {paid} of {total}");
    }
}

#[test]
fn params_change_only_by_governance() {
    let mut f = Fixture::new();
    let mut params = f.host.view(&Staking, &IStaking::paramsCall {});
    assert_eq!(params.unbondingPeriod, 7 * 86_400);
    params.penaltyThreshold = 1;
    assert_reverts(
        f.staking(
            account(1),
            U256::ZERO,
            &IStaking::setParamsCall {
                params: params.clone(),
            },
        ),
        IStaking::NotGovernance {
            account: account(1),
        },
    );
    f.host
        .send(
            &Staking,
            addresses::GOVERNOR,
            U256::ZERO,
            &IStaking::setParamsCall {
                params: params.clone(),
            },
        )
        .unwrap();
    assert_eq!(f.host.view(&Staking, &IStaking::paramsCall {}), params);
    assert_eq!(Staking.address(), addresses::STAKING);
}
