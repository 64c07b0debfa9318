//! The treasury module: the account that collects base fees, platform fees and rounding dust.
//!
//! Its OPEN sits in the module's own account, so `eth_getBalance` shows it; `balance()` is the
//! same figure for contracts. Spending it is a governance action (a later module).

use alloy_primitives::{Bytes, U256};
use alloy_sol_types::SolCall;
use openledger_chain::{ModuleCall, ModuleError, ModuleHost, NativeModule};
use openledger_primitives::addresses;

use crate::{abi::ITreasury, call::emit};

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

    fn call(&self, call: ModuleCall<'_>, host: &mut dyn ModuleHost) -> Result<Bytes, ModuleError> {
        if call.input.is_empty() {
            return deposit(call, host);
        }
        if call.input.starts_with(&ITreasury::balanceCall::SELECTOR) {
            ITreasury::balanceCall::abi_decode(call.input).map_err(|_| bad_calldata())?;
            let balance = host.balance(host.address())?;
            return Ok(ITreasury::balanceCall::abi_encode_returns(&balance).into());
        }
        Err(ModuleError::Revert(Bytes::new()))
    }
}

/// Plain OPEN transfers to the treasury are accepted and recorded.
fn deposit(call: ModuleCall<'_>, host: &mut dyn ModuleHost) -> Result<Bytes, ModuleError> {
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

fn bad_calldata() -> ModuleError {
    ModuleError::Revert(Bytes::new())
}
