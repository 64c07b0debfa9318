//! GOPEN: OPEN wrapped 1:1 into an ERC-20 that carries voting power (see `abi/IGOPEN.sol`).
//!
//! Voting power is kept as OpenZeppelin's ERC20Votes keeps it: each delegate has a list of
//! checkpoints `(timestamp, votes)`, appended (or, within the same second, overwritten) whenever
//! its votes change, and the total supply has one list too. A past value is then a binary
//! search, so the Governor counts every vote exactly as it stood at a proposal's snapshot,
//! whatever moved since. The OPEN backing the supply is the module account's balance.

use crate::Result;
use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::SolCall;
use openledger_chain::{ModuleCall, ModuleHost};
use openledger_primitives::addresses;

use crate::{
    abi::IGOPEN::{self, Checkpoint208, IGOPENCalls},
    call::{Answer, emit, emitted, native_module, returns, revert},
    state::gopen::{ALLOWANCES, BALANCES, CHECKPOINTS, DELEGATES, TOTAL_CHECKPOINTS, TOTAL_SUPPLY},
    storage::{Slot, Storage},
};

const KEY_BITS: usize = 48;

native_module! {
    /// The GOPEN module.
    Gopen at addresses::GOPEN, named "gopen", answers IGOPEN::IGOPENCalls,
    payable [deposit], run run
}

/// Runs a decoded call on the module's own storage.
fn run(mut s: Storage<'_>, call: &ModuleCall<'_>, decoded: IGOPENCalls) -> Answer {
    let caller = call.caller;
    use IGOPENCalls as C;
    match decoded {
        C::name(_) => Ok(returns(&"Governance OPEN".to_string())),
        C::symbol(_) => Ok(returns(&"GOPEN".to_string())),
        C::decimals(_) => Ok(IGOPEN::decimalsCall::abi_encode_returns(&18).into()),
        C::totalSupply(_) => Ok(returns(&s.get::<U256>(TOTAL_SUPPLY)?)),
        C::balanceOf(c) => Ok(returns(&s.get::<U256>(BALANCES.at(c.account))?)),
        C::allowance(c) => Ok(returns(
            &s.get::<U256>(ALLOWANCES.at(c.owner).at(c.spender))?,
        )),
        C::transfer(c) => {
            transfer(&mut s, caller, c.to, c.value)?;
            Ok(returns(&true))
        }
        C::approve(c) => approve(&mut s, caller, c.spender, c.value),
        C::transferFrom(c) => {
            spend_allowance(&mut s, c.from, caller, c.value)?;
            transfer(&mut s, c.from, c.to, c.value)?;
            Ok(returns(&true))
        }
        C::deposit(_) => deposit(&mut s, caller, call.value),
        C::withdraw(c) => withdraw(&mut s, caller, c.amount),
        C::delegate(c) => delegate(&mut s, caller, c.delegatee),
        C::delegates(c) => Ok(returns(&s.get::<Address>(DELEGATES.at(c.account))?)),
        C::getVotes(c) => Ok(returns(&latest(&mut s, CHECKPOINTS.at(c.account))?)),
        C::getPastVotes(c) => {
            let now = past(s.host(), c.timepoint)?;
            Ok(returns(&lookup(&mut s, CHECKPOINTS.at(c.account), now)?))
        }
        C::getPastTotalSupply(c) => {
            let now = past(s.host(), c.timepoint)?;
            Ok(returns(&lookup(&mut s, TOTAL_CHECKPOINTS, now)?))
        }
        C::numCheckpoints(c) => {
            let count = s.len(CHECKPOINTS.at(c.account))?;
            Ok(returns(&(count.min(u64::from(u32::MAX)) as u32)))
        }
        C::checkpoints(c) => {
            let word: U256 = s.item(CHECKPOINTS.at(c.account), u64::from(c.pos))?;
            let (key, value) = unpack(word);
            let checkpoint = Checkpoint208 {
                _key: alloy_primitives::aliases::U48::from(key),
                _value: alloy_primitives::aliases::U208::from(value),
            };
            Ok(IGOPEN::checkpointsCall::abi_encode_returns(&checkpoint).into())
        }
        C::clock(_) => Ok(returns(&alloy_primitives::aliases::U48::from(
            s.host().timestamp(),
        ))),
        C::CLOCK_MODE(_) => Ok(returns(&"mode=timestamp".to_string())),
    }
}

/// The ABI-encoded return data of a call.
type Out = Answer;

fn deposit(s: &mut Storage<'_>, caller: Address, amount: U256) -> Out {
    if amount.is_zero() {
        return Err(revert(IGOPEN::ZeroAmount {}));
    }
    s.add(BALANCES.at(caller), amount)?;
    let supply = s.add(TOTAL_SUPPLY, amount)?;
    write_checkpoint(s, TOTAL_CHECKPOINTS, supply)?;
    let delegatee: Address = s.get(DELEGATES.at(caller))?;
    move_votes(s, Address::ZERO, delegatee, amount)?;
    emitted(
        s.host(),
        &IGOPEN::Transfer {
            from: Address::ZERO,
            to: caller,
            value: amount,
        },
    )
}

fn withdraw(s: &mut Storage<'_>, caller: Address, amount: U256) -> Out {
    if amount.is_zero() {
        return Err(revert(IGOPEN::ZeroAmount {}));
    }
    debit(s, caller, amount)?;
    let supply = s.get::<U256>(TOTAL_SUPPLY)? - amount;
    s.set(TOTAL_SUPPLY, supply)?;
    write_checkpoint(s, TOTAL_CHECKPOINTS, supply)?;
    let delegatee: Address = s.get(DELEGATES.at(caller))?;
    move_votes(s, delegatee, Address::ZERO, amount)?;
    s.host().transfer(caller, amount)?;
    emitted(
        s.host(),
        &IGOPEN::Transfer {
            from: caller,
            to: Address::ZERO,
            value: amount,
        },
    )
}

/// Takes `amount` from `account`'s balance, or reverts as ERC-20 tokens do.
fn debit(s: &mut Storage<'_>, account: Address, amount: U256) -> Result<()> {
    let slot = BALANCES.at(account);
    let balance: U256 = s.get(slot)?;
    if balance < amount {
        return Err(revert(IGOPEN::ERC20InsufficientBalance {
            sender: account,
            balance,
            needed: amount,
        }));
    }
    s.set(slot, balance - amount)
}

fn transfer(s: &mut Storage<'_>, from: Address, to: Address, value: U256) -> Result<()> {
    if to.is_zero() {
        return Err(revert(IGOPEN::ERC20InvalidReceiver { receiver: to }));
    }
    debit(s, from, value)?;
    s.add(BALANCES.at(to), value)?;
    let from_delegate: Address = s.get(DELEGATES.at(from))?;
    let to_delegate: Address = s.get(DELEGATES.at(to))?;
    move_votes(s, from_delegate, to_delegate, value)?;
    emit(s.host(), &IGOPEN::Transfer { from, to, value })
}

fn approve(s: &mut Storage<'_>, owner: Address, spender: Address, value: U256) -> Out {
    if spender.is_zero() {
        return Err(revert(IGOPEN::ERC20InvalidSpender { spender }));
    }
    s.set(ALLOWANCES.at(owner).at(spender), value)?;
    emit(
        s.host(),
        &IGOPEN::Approval {
            owner,
            spender,
            value,
        },
    )?;
    Ok(returns(&true))
}

/// Uses `value` of the allowance `owner` gave `spender`; an infinite (max) allowance stays.
fn spend_allowance(
    s: &mut Storage<'_>,
    owner: Address,
    spender: Address,
    value: U256,
) -> Result<()> {
    let slot = ALLOWANCES.at(owner).at(spender);
    let allowance: U256 = s.get(slot)?;
    if allowance == U256::MAX {
        return Ok(());
    }
    if allowance < value {
        return Err(revert(IGOPEN::ERC20InsufficientAllowance {
            spender,
            allowance,
            needed: value,
        }));
    }
    s.set(slot, allowance - value)
}

fn delegate(s: &mut Storage<'_>, caller: Address, delegatee: Address) -> Out {
    let slot = DELEGATES.at(caller);
    let previous: Address = s.get(slot)?;
    s.set(slot, delegatee)?;
    emit(
        s.host(),
        &IGOPEN::DelegateChanged {
            delegator: caller,
            fromDelegate: previous,
            toDelegate: delegatee,
        },
    )?;
    let balance: U256 = s.get(BALANCES.at(caller))?;
    move_votes(s, previous, delegatee, balance)?;
    Ok(Bytes::new())
}

/// Moves `amount` votes from one delegate to another (the zero address has none).
fn move_votes(s: &mut Storage<'_>, from: Address, to: Address, amount: U256) -> Result<()> {
    if from == to || amount.is_zero() {
        return Ok(());
    }
    for (delegate, add) in [(from, false), (to, true)] {
        if delegate.is_zero() {
            continue;
        }
        let list = CHECKPOINTS.at(delegate);
        let previous = latest(s, list)?;
        let votes = if add {
            previous + amount
        } else {
            previous - amount
        };
        write_checkpoint(s, list, votes)?;
        emit(
            s.host(),
            &IGOPEN::DelegateVotesChanged {
                delegate,
                previousVotes: previous,
                newVotes: votes,
            },
        )?;
    }
    Ok(())
}

fn pack(key: u64, value: U256) -> U256 {
    (value << KEY_BITS) | U256::from(key)
}

fn unpack(word: U256) -> (u64, U256) {
    let key = (word & U256::from((1u64 << KEY_BITS) - 1)).to::<u64>();
    (key, word >> KEY_BITS)
}

/// Records `value` as of now in the checkpoint list at `list`.
fn write_checkpoint(s: &mut Storage<'_>, list: Slot, value: U256) -> Result<()> {
    let now = s.host().timestamp();
    let len = s.len(list)?;
    if len > 0 {
        let (key, _) = unpack(s.item(list, len - 1)?);
        if key == now {
            return s.set_item(list, len - 1, pack(now, value));
        }
    }
    s.push(list, pack(now, value)).map(drop)
}

fn latest(s: &mut Storage<'_>, list: Slot) -> Result<U256> {
    let len = s.len(list)?;
    if len == 0 {
        return Ok(U256::ZERO);
    }
    Ok(unpack(s.item(list, len - 1)?).1)
}

/// The value at the end of second `timepoint`: the last checkpoint at or before it.
fn lookup(s: &mut Storage<'_>, list: Slot, timepoint: u64) -> Result<U256> {
    // The first checkpoint after `timepoint` is at `high` once the search ends.
    let (mut low, mut high) = (0, s.len(list)?);
    while low < high {
        let mid = low + (high - low) / 2;
        let (key, _) = unpack(s.item(list, mid)?);
        if key > timepoint {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    if high == 0 {
        return Ok(U256::ZERO);
    }
    Ok(unpack(s.item(list, high - 1)?).1)
}

/// Checks that `timepoint` is in the past, as ERC-5805 requires of past lookups.
pub(crate) fn past(host: &mut dyn ModuleHost, timepoint: U256) -> Result<u64> {
    let now = host.timestamp();
    if timepoint >= U256::from(now) {
        return Err(revert(IGOPEN::ERC5805FutureLookup {
            timepoint,
            clock: alloy_primitives::aliases::U48::from(now),
        }));
    }
    Ok(timepoint.to())
}

/// `account`'s votes at the end of second `timepoint`, for the Governor.
pub fn past_votes(host: &mut dyn ModuleHost, account: Address, timepoint: u64) -> Result<U256> {
    lookup(
        &mut Storage::of(host, addresses::GOPEN),
        CHECKPOINTS.at(account),
        timepoint,
    )
}

/// The GOPEN supply at the end of second `timepoint`, for the Governor's quorum.
pub fn past_total_supply(host: &mut dyn ModuleHost, timepoint: u64) -> Result<U256> {
    lookup(
        &mut Storage::of(host, addresses::GOPEN),
        TOTAL_CHECKPOINTS,
        timepoint,
    )
}

#[cfg(test)]
mod tests;
