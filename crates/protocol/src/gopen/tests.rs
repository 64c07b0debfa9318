use alloy_primitives::{Address, U256};

use openledger_chain::NativeModule;

use super::Gopen;
use crate::{
    abi::IGOPEN,
    testing::{Fixture, account, assert_reverts, milli},
};

/// Wraps `open` milli-OPEN of `who`'s into GOPEN.
fn deposit(f: &mut Fixture, who: Address, open: u64) {
    f.gopen(who, milli(open), &IGOPEN::depositCall {}).unwrap();
}

fn votes(f: &mut Fixture, who: Address) -> U256 {
    f.host.view(&Gopen, &IGOPEN::getVotesCall { account: who })
}

fn past_votes(f: &mut Fixture, who: Address, at: u64) -> U256 {
    f.host.view(
        &Gopen,
        &IGOPEN::getPastVotesCall {
            account: who,
            timepoint: U256::from(at),
        },
    )
}

#[test]
fn deposit_and_withdraw_wrap_open_one_to_one() {
    let mut f = Fixture::new();
    let alice = account(1);
    let before = f.host.balance_of(alice);
    deposit(&mut f, alice, 5_000);
    assert_eq!(f.host.balance_of(alice), before - milli(5_000));
    assert_eq!(f.host.balance_of(Gopen.address()), milli(5_000));
    let balance = f
        .host
        .view(&Gopen, &IGOPEN::balanceOfCall { account: alice });
    assert_eq!(balance, milli(5_000));
    f.gopen(
        alice,
        U256::ZERO,
        &IGOPEN::withdrawCall {
            amount: milli(2_000),
        },
    )
    .unwrap();
    assert_eq!(f.host.balance_of(alice), before - milli(3_000));
    let supply = f.host.view(&Gopen, &IGOPEN::totalSupplyCall {});
    assert_eq!(supply, milli(3_000));
    assert_eq!(f.host.balance_of(Gopen.address()), supply);
    assert_reverts(
        f.gopen(
            alice,
            U256::ZERO,
            &IGOPEN::withdrawCall {
                amount: milli(3_001),
            },
        ),
        IGOPEN::ERC20InsufficientBalance {
            sender: alice,
            balance: milli(3_000),
            needed: milli(3_001),
        },
    );
}

#[test]
fn voting_power_needs_delegation() {
    let mut f = Fixture::new();
    let (alice, bob) = (account(1), account(2));
    deposit(&mut f, alice, 1_000);
    assert_eq!(votes(&mut f, alice), U256::ZERO);
    f.gopen(
        alice,
        U256::ZERO,
        &IGOPEN::delegateCall { delegatee: alice },
    )
    .unwrap();
    assert_eq!(votes(&mut f, alice), milli(1_000));
    f.gopen(alice, U256::ZERO, &IGOPEN::delegateCall { delegatee: bob })
        .unwrap();
    assert_eq!(votes(&mut f, alice), U256::ZERO);
    assert_eq!(votes(&mut f, bob), milli(1_000));
    let delegate = f
        .host
        .view(&Gopen, &IGOPEN::delegatesCall { account: alice });
    assert_eq!(delegate, bob);
}

#[test]
fn past_votes_are_exact_after_transfers() {
    let mut f = Fixture::new();
    let (alice, bob, carol) = (account(1), account(2), account(3));
    let t0 = f.host.timestamp;
    for who in [alice, bob] {
        deposit(&mut f, who, 1_000);
        f.gopen(who, U256::ZERO, &IGOPEN::delegateCall { delegatee: who })
            .unwrap();
    }
    f.host.timestamp = t0 + 10;
    f.gopen(
        alice,
        U256::ZERO,
        &IGOPEN::transferCall {
            to: bob,
            value: milli(400),
        },
    )
    .unwrap();
    // Carol holds GOPEN without delegating: transfers to her take votes out of circulation.
    f.gopen(
        bob,
        U256::ZERO,
        &IGOPEN::transferCall {
            to: carol,
            value: milli(100),
        },
    )
    .unwrap();
    f.host.timestamp = t0 + 20;
    f.gopen(
        alice,
        U256::ZERO,
        &IGOPEN::transferCall {
            to: bob,
            value: milli(600),
        },
    )
    .unwrap();
    f.host.timestamp = t0 + 30;

    assert_eq!(past_votes(&mut f, alice, t0), milli(1_000));
    assert_eq!(past_votes(&mut f, bob, t0), milli(1_000));
    assert_eq!(past_votes(&mut f, alice, t0 + 9), milli(1_000));
    assert_eq!(past_votes(&mut f, alice, t0 + 10), milli(600));
    assert_eq!(past_votes(&mut f, bob, t0 + 10), milli(1_300));
    assert_eq!(past_votes(&mut f, alice, t0 + 25), U256::ZERO);
    assert_eq!(past_votes(&mut f, bob, t0 + 25), milli(1_900));
    assert_eq!(past_votes(&mut f, carol, t0 + 25), U256::ZERO);
    assert_eq!(past_votes(&mut f, alice, t0 - 1), U256::ZERO);
    // One checkpoint per second in which the votes changed.
    let count = f
        .host
        .view(&Gopen, &IGOPEN::numCheckpointsCall { account: bob });
    assert_eq!(count, 3);
    let supply = f.host.view(
        &Gopen,
        &IGOPEN::getPastTotalSupplyCall {
            timepoint: U256::from(t0 + 15),
        },
    );
    assert_eq!(supply, milli(2_000));
}

#[test]
fn past_lookups_must_be_in_the_past() {
    let mut f = Fixture::new();
    let now = f.host.timestamp;
    let call = IGOPEN::getPastVotesCall {
        account: account(1),
        timepoint: U256::from(now),
    };
    assert_reverts(
        f.gopen(account(1), U256::ZERO, &call),
        IGOPEN::ERC5805FutureLookup {
            timepoint: U256::from(now),
            clock: alloy_primitives::aliases::U48::from(now),
        },
    );
    let mode = f.host.view(&Gopen, &IGOPEN::CLOCK_MODECall {});
    assert_eq!(mode, "mode=timestamp");
}

#[test]
fn transfer_from_spends_the_allowance() {
    let mut f = Fixture::new();
    let (alice, bob) = (account(1), account(2));
    deposit(&mut f, alice, 1_000);
    f.gopen(
        alice,
        U256::ZERO,
        &IGOPEN::approveCall {
            spender: bob,
            value: milli(300),
        },
    )
    .unwrap();
    let pull = |value| IGOPEN::transferFromCall {
        from: alice,
        to: bob,
        value,
    };
    f.gopen(bob, U256::ZERO, &pull(milli(200))).unwrap();
    assert_reverts(
        f.gopen(bob, U256::ZERO, &pull(milli(200))),
        IGOPEN::ERC20InsufficientAllowance {
            spender: bob,
            allowance: milli(100),
            needed: milli(200),
        },
    );
    assert_reverts(
        f.gopen(
            alice,
            U256::ZERO,
            &IGOPEN::transferCall {
                to: Address::ZERO,
                value: milli(1),
            },
        ),
        IGOPEN::ERC20InvalidReceiver {
            receiver: Address::ZERO,
        },
    );
    let balance = f.host.view(&Gopen, &IGOPEN::balanceOfCall { account: bob });
    assert_eq!(balance, milli(200));
    assert_eq!(f.host.events::<IGOPEN::Transfer>().len(), 2);
}
