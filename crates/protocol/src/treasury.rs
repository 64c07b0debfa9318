//! The treasury module: the account that collects base fees, platform fees and rounding dust.
//!
//! Its OPEN sits in the module's own account, so `eth_getBalance` shows it; `balance()` is the
//! same figure for contracts. Spending it is a governance action.

use alloy_primitives::{Address, Bytes, U256};
use openledger_chain::{ModuleCall, ModuleHost, NativeModule};
use openledger_primitives::addresses;

use crate::{
    abi::ITreasury::{self, ITreasuryCalls},
    call::{Answer, check_len, decode, emit, emitted, no_value, returns, revert},
    state::is_governance,
};

const MAX_MEMO: usize = 1024;

fn too_long(field: String, max: usize) -> ITreasury::TooLong {
    ITreasury::TooLong {
        field,
        max: U256::from(max),
    }
}

/// The treasury module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Treasury;

impl NativeModule for Treasury {
    fn address(&self) -> alloy_primitives::Address {
        addresses::TREASURY
    }

    fn name(&self) -> &'static str {
        "treasury"
    }

    fn call(&self, call: ModuleCall<'_>, host: &mut dyn ModuleHost) -> Answer {
        if call.input.is_empty() {
            return deposit(call, host);
        }
        let decoded: ITreasuryCalls = decode(call.input, ITreasury::InvalidCalldata {})?;
        no_value(&call, ITreasury::NotPayable {})?;
        match decoded {
            ITreasuryCalls::balance(_) => Ok(returns(&host.balance(host.address())?)),
            ITreasuryCalls::spend(c) => spend(call.caller, c, host),
        }
    }
}

fn spend(caller: Address, c: ITreasury::spendCall, host: &mut dyn ModuleHost) -> Answer {
    if !is_governance(host, caller)? {
        return Err(revert(ITreasury::NotGovernance { account: caller }));
    }
    check_len(&c.memo, MAX_MEMO, too_long, "memo")?;
    let available = host.balance(host.address())?;
    if available < c.amount {
        return Err(revert(ITreasury::InsufficientBalance {
            available,
            required: c.amount,
        }));
    }
    host.transfer(c.to, c.amount)?;
    emitted(
        host,
        &ITreasury::Spent {
            to: c.to,
            amount: c.amount,
            memo: c.memo,
        },
    )
}

/// Plain OPEN transfers to the treasury are accepted and recorded.
fn deposit(call: ModuleCall<'_>, host: &mut dyn ModuleHost) -> Answer {
    if call.value > U256::ZERO {
        emit(
            host,
            &ITreasury::Deposited {
                from: call.caller,
                amount: call.value,
            },
        )?;
    }
    Ok(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ADMIN, Fixture, account, assert_reverts, milli};

    #[test]
    fn only_governance_spends_and_never_more_than_it_holds() {
        let mut f = Fixture::new();
        f.host.fund(addresses::TREASURY, milli(5_000));
        let spend = |amount| ITreasury::spendCall {
            to: account(7),
            amount,
            memo: "grant".into(),
        };
        assert_reverts(
            f.host
                .send(&Treasury, account(1), U256::ZERO, &spend(milli(1))),
            ITreasury::NotGovernance {
                account: account(1),
            },
        );
        assert_reverts(
            f.host
                .send(&Treasury, ADMIN, U256::ZERO, &spend(milli(5_001))),
            ITreasury::InsufficientBalance {
                available: milli(5_000),
                required: milli(5_001),
            },
        );
        let before = f.host.balance_of(account(7));
        f.host
            .send(
                &Treasury,
                addresses::GOVERNOR,
                U256::ZERO,
                &spend(milli(2_000)),
            )
            .unwrap();
        assert_eq!(f.host.balance_of(account(7)), before + milli(2_000));
        assert_eq!(f.host.balance_of(addresses::TREASURY), milli(3_000));
    }
}
