//! What every module does with a call: decode it, refuse OPEN it does not expect, emit events
//! and revert with a custom error the caller's ABI can decode.

use crate::Result;
use alloy_primitives::Bytes;
use alloy_sol_types::{SolError, SolEvent, SolInterface};
use openledger_chain::{ModuleCall, ModuleError, ModuleHost};

/// A revert carrying `error`, ABI-encoded with its selector.
pub fn revert(error: impl SolError) -> ModuleError {
    ModuleError::Revert(error.abi_encode().into())
}

/// Decodes the call data into one of an interface's calls, or reverts with `invalid`.
pub fn decode<C: SolInterface>(input: &[u8], invalid: impl SolError) -> Result<C> {
    C::abi_decode(input).map_err(|_| revert(invalid))
}

/// What a module's call answers: its ABI-encoded return value, or why it failed.
pub type Answer = Result<Bytes>;

/// Reverts with `not_payable` if the call carries OPEN.
pub fn no_value(call: &ModuleCall<'_>, not_payable: impl SolError) -> Result<()> {
    if call.value.is_zero() {
        Ok(())
    } else {
        Err(revert(not_payable))
    }
}

/// Emits `event` from the module.
pub fn emit(host: &mut dyn ModuleHost, event: &impl SolEvent) -> Result<()> {
    let data = event.encode_log_data();
    host.log(data.topics().to_vec(), data.data)
}

/// Emits `event` and answers nothing: how a call that changes state and returns no value ends.
pub fn emitted(host: &mut dyn ModuleHost, event: &impl SolEvent) -> Answer {
    emit(host, event)?;
    Ok(Bytes::new())
}

/// ABI-encodes a return value.
pub fn returns<T: alloy_sol_types::SolValue>(value: &T) -> Bytes {
    value.abi_encode().into()
}

/// Reverts with `too_long(field, max)` if `text` is longer than `max` bytes.
pub fn check_len<E: SolError>(
    text: &str,
    max: usize,
    too_long: impl Fn(String, usize) -> E,
    field: &str,
) -> Result<()> {
    if text.len() > max {
        Err(revert(too_long(field.to_string(), max)))
    } else {
        Ok(())
    }
}

/// Declares a module: its unit struct, where it lives and under what name, which of its calls
/// take OPEN, the function that runs a decoded call on the module's own storage and, when it
/// has one, the function that writes its genesis storage. Every module decodes its calls,
/// refuses OPEN it does not expect and opens its own storage the same way, so that is written
/// here once.
macro_rules! native_module {
    (
        $(#[$doc:meta])*
        $module:ident at $address:expr, named $name:literal, answers $interface:ident :: $calls:ident,
        payable [$($payable:ident),* $(,)?] $(, genesis $genesis:path)?, run $run:path $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $module;

        impl openledger_chain::NativeModule for $module {
            fn address(&self) -> alloy_primitives::Address {
                $address
            }

            fn name(&self) -> &'static str {
                $name
            }

            $(
                fn genesis_storage(
                    &self,
                    genesis: &openledger_primitives::Genesis,
                ) -> Vec<(alloy_primitives::U256, alloy_primitives::U256)> {
                    $genesis(genesis)
                }
            )?

            fn call(
                &self,
                call: openledger_chain::ModuleCall<'_>,
                host: &mut dyn openledger_chain::ModuleHost,
            ) -> Result<alloy_primitives::Bytes, openledger_chain::ModuleError> {
                let decoded: $interface::$calls =
                    $crate::call::decode(call.input, $interface::InvalidCalldata {})?;
                let payable = false $(|| matches!(decoded, $interface::$calls::$payable(_)))*;
                if !payable {
                    $crate::call::no_value(&call, $interface::NotPayable {})?;
                }
                $run($crate::storage::Storage::own(host), &call, decoded)
            }
        }
    };
}

pub(crate) use native_module;
