//! The seam where OpenLedger's native modules plug into the EVM.
//!
//! A native module is Rust code at a fixed address, called like a contract. It runs inside the
//! transaction's journal through a [`ModuleHost`], so its storage writes, balance moves and logs
//! revert with the call that made them, and its state lives in its own account's storage slots
//! (covered by the state root, readable with `eth_getStorageAt` and `eth_getProof`).
//!
//! The chain knows nothing of what modules do: the node hands a [`Modules`] set to the chain, and
//! [`ChainPrecompiles`] serves Ethereum's precompiles and the modules side by side.

use std::{fmt::Debug, sync::Arc};

use alloy_primitives::{Address, B256, Bytes, Log, LogData, U256};
use openledger_primitives::Genesis;
use revm::{
    context::Cfg,
    context_interface::{Block, ContextTr, JournalTr},
    handler::{EthPrecompiles, PrecompileProvider, precompile_output_to_interpreter_result},
    interpreter::{CallInputs, CallScheme, InterpreterResult},
    precompile::{PrecompileHalt, PrecompileOutput},
    primitives::{AddressSet, hardfork::SpecId},
};

/// Gas charged for every module call, before any work.
pub const CALL_BASE_GAS: u64 = 2_600;
/// Gas for reading one of the module's storage slots.
pub const SLOAD_GAS: u64 = 2_100;
/// Gas for writing one of the module's storage slots.
pub const SSTORE_GAS: u64 = 20_000;
/// Gas for a log, plus [`LOG_TOPIC_GAS`] per topic and [`LOG_BYTE_GAS`] per data byte.
pub const LOG_GAS: u64 = 375;
/// Gas per log topic.
pub const LOG_TOPIC_GAS: u64 = 375;
/// Gas per byte of log data.
pub const LOG_BYTE_GAS: u64 = 8;
/// Gas for reading an account balance.
pub const BALANCE_GAS: u64 = 2_600;
/// Gas for moving OPEN out of the module's account.
pub const TRANSFER_GAS: u64 = 9_000;
/// How deep modules may call each other (the Governor calling Staking calling Models is 3).
pub const MAX_MODULE_DEPTH: usize = 8;

/// Why a module call stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// The call reverts with this ABI-encoded data (a custom error or `Error(string)`); state
    /// changes of the call are undone and unused gas is returned.
    #[error("reverted")]
    Revert(Bytes),
    /// The call ran out of gas.
    #[error("out of gas")]
    OutOfGas,
    /// The node itself failed (storage); the block cannot be built.
    #[error("module host failure: {0}")]
    Fatal(String),
}

/// A call into a module.
#[derive(Debug, Clone, Copy)]
pub struct ModuleCall<'a> {
    /// The account calling the module.
    pub caller: Address,
    /// OPEN sent with the call (already credited to the module's account).
    pub value: U256,
    /// ABI-encoded call data.
    pub input: &'a [u8],
    /// True inside `STATICCALL` and `eth_call` views: writes must fail.
    pub is_static: bool,
}

/// What a module can do to the chain during a call. Every operation is metered.
pub trait ModuleHost {
    /// The module's own address.
    fn address(&self) -> Address;
    /// The current block's number.
    fn block_number(&self) -> u64;
    /// The current block's timestamp (seconds).
    fn timestamp(&self) -> u64;
    /// The chain id (for EIP-712 domains).
    fn chain_id(&self) -> u64;
    /// Reads one of the module's storage slots.
    fn sload(&mut self, slot: U256) -> Result<U256, ModuleError>;
    /// Reads a storage slot of another account: modules read each other's state this way
    /// (settlement reads a model's rates), but each writes only its own.
    fn sload_from(&mut self, address: Address, slot: U256) -> Result<U256, ModuleError>;
    /// Writes one of the module's storage slots.
    fn sstore(&mut self, slot: U256, value: U256) -> Result<(), ModuleError>;
    /// Reads an account's OPEN balance.
    fn balance(&mut self, address: Address) -> Result<U256, ModuleError>;
    /// Sends OPEN from the module's own account.
    fn transfer(&mut self, to: Address, amount: U256) -> Result<(), ModuleError>;
    /// Emits an event from the module's address.
    fn log(&mut self, topics: Vec<B256>, data: Bytes) -> Result<(), ModuleError>;
    /// Charges extra gas for module-specific work.
    fn charge(&mut self, gas: u64) -> Result<(), ModuleError>;
    /// Calls another native module as this module, sending it `value` from this module's
    /// account: the Governor runs its actions this way, settlement pays the stakers' share. The
    /// callee's changes are undone if it fails, and its error is returned for the caller to
    /// pass on or handle. Calls to addresses that are not modules revert.
    fn call_module(&mut self, to: Address, input: &[u8], value: U256)
    -> Result<Bytes, ModuleError>;
}

/// A native protocol module.
pub trait NativeModule: Send + Sync + Debug {
    /// The module's fixed address.
    fn address(&self) -> Address;
    /// A short name for logs and errors.
    fn name(&self) -> &'static str;
    /// Runs a call; the returned bytes are the ABI-encoded return data.
    fn call(&self, call: ModuleCall<'_>, host: &mut dyn ModuleHost) -> Result<Bytes, ModuleError>;
    /// The module's storage in the genesis state (its parameters), as `(slot, value)` pairs.
    fn genesis_storage(&self, genesis: &Genesis) -> Vec<(U256, U256)> {
        let _ = genesis;
        Vec::new()
    }
}

/// The set of native modules a chain runs.
#[derive(Debug, Clone, Default)]
pub struct Modules {
    modules: Arc<Vec<Arc<dyn NativeModule>>>,
}

impl Modules {
    /// A set of modules; later ones with the same address are ignored.
    pub fn new(modules: Vec<Arc<dyn NativeModule>>) -> Self {
        let mut unique: Vec<Arc<dyn NativeModule>> = Vec::new();
        for module in modules {
            if !unique.iter().any(|m| m.address() == module.address()) {
                unique.push(module);
            }
        }
        Self {
            modules: Arc::new(unique),
        }
    }

    /// The module at `address`.
    pub fn get(&self, address: &Address) -> Option<&Arc<dyn NativeModule>> {
        self.modules.iter().find(|m| m.address() == *address)
    }

    /// All modules.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn NativeModule>> {
        self.modules.iter()
    }
}

/// Ethereum's precompiles plus the native modules, as one revm [`PrecompileProvider`].
#[derive(Debug, Clone)]
pub struct ChainPrecompiles {
    eth: EthPrecompiles,
    modules: Modules,
    warm: AddressSet,
}

impl ChainPrecompiles {
    /// The provider for `spec` with `modules`.
    pub fn new(spec: SpecId, modules: Modules) -> Self {
        let eth = EthPrecompiles::new(spec);
        let mut this = Self {
            eth,
            modules,
            warm: AddressSet::default(),
        };
        this.rebuild_warm();
        this
    }

    fn rebuild_warm(&mut self) {
        self.warm.clone_from(self.eth.warm_addresses());
        self.warm.extend(self.modules.iter().map(|m| m.address()));
    }
}

impl<CTX> PrecompileProvider<CTX> for ChainPrecompiles
where
    CTX: ContextTr<Cfg: Cfg<Spec = SpecId>>,
{
    type Output = InterpreterResult;

    fn set_spec(&mut self, spec: SpecId) -> bool {
        let changed = <EthPrecompiles as PrecompileProvider<CTX>>::set_spec(&mut self.eth, spec);
        self.rebuild_warm();
        changed
    }

    fn run(
        &mut self,
        context: &mut CTX,
        inputs: &CallInputs,
    ) -> Result<Option<InterpreterResult>, String> {
        let Some(module) = self.modules.get(&inputs.bytecode_address).cloned() else {
            return <EthPrecompiles as PrecompileProvider<CTX>>::run(
                &mut self.eth,
                context,
                inputs,
            );
        };
        let output = run_module(module.as_ref(), &self.modules, context, inputs)?;
        Ok(Some(precompile_output_to_interpreter_result(
            output,
            inputs.gas_limit,
        )))
    }

    fn warm_addresses(&self) -> &AddressSet {
        &self.warm
    }
}

fn run_module<CTX: ContextTr>(
    module: &dyn NativeModule,
    modules: &Modules,
    context: &mut CTX,
    inputs: &CallInputs,
) -> Result<PrecompileOutput, String> {
    let reservoir = inputs.reservoir;
    // A module only ever acts on its own account: DELEGATECALL and CALLCODE would run it in the
    // caller's storage, which no module is written for.
    if !matches!(inputs.scheme, CallScheme::Call | CallScheme::StaticCall)
        || inputs.target_address != module.address()
    {
        return Ok(PrecompileOutput::revert(0, Bytes::new(), reservoir));
    }
    let input = inputs.input.as_bytes(context).to_vec();
    let block_number = context.block().number().saturating_to();
    let timestamp = context.block().timestamp().saturating_to();
    let chain_id = context.cfg().chain_id();
    let env = HostEnv {
        block_number,
        timestamp,
        chain_id,
        is_static: inputs.is_static,
        gas_limit: inputs.gas_limit,
    };
    let mut host = JournalHost::new(context.journal_mut(), modules, module.address(), env);
    let call = ModuleCall {
        caller: inputs.caller,
        value: inputs.call_value(),
        input: &input,
        is_static: inputs.is_static,
    };
    let result = host
        .charge(CALL_BASE_GAS)
        .and_then(|()| module.call(call, &mut host));
    let gas_used = host.gas_used;
    match result {
        Ok(bytes) => Ok(PrecompileOutput::new(gas_used, bytes, reservoir)),
        Err(ModuleError::Revert(data)) => Ok(PrecompileOutput::revert(gas_used, data, reservoir)),
        Err(ModuleError::OutOfGas) => {
            Ok(PrecompileOutput::halt(PrecompileHalt::OutOfGas, reservoir))
        }
        Err(ModuleError::Fatal(msg)) => Err(format!("module {}: {msg}", module.name())),
    }
}

/// What a module call sees of the block and the call it runs in.
#[derive(Debug, Clone, Copy)]
pub struct HostEnv {
    /// The block's number.
    pub block_number: u64,
    /// The block's timestamp.
    pub timestamp: u64,
    /// The chain's id.
    pub chain_id: u64,
    /// Whether the call may change nothing (`STATICCALL`, `eth_call` of a view).
    pub is_static: bool,
    /// Gas the call may use.
    pub gas_limit: u64,
}

/// [`ModuleHost`] over a transaction's journal: what every module call runs on, in a block and
/// in the protocol's unit tests alike (which drive modules on a journal over an in-memory
/// database, through [`JournalHost::call`]).
pub struct JournalHost<'a, J> {
    journal: &'a mut J,
    modules: &'a Modules,
    /// How many module calls are on the stack below this one.
    depth: usize,
    address: Address,
    block_number: u64,
    timestamp: u64,
    chain_id: u64,
    is_static: bool,
    gas_limit: u64,
    gas_used: u64,
}

impl<'a, J: JournalTr> JournalHost<'a, J> {
    /// The host of a call made by `address` (a module's own account, or an external caller's)
    /// at depth 0.
    pub fn new(journal: &'a mut J, modules: &'a Modules, address: Address, env: HostEnv) -> Self {
        Self {
            journal,
            modules,
            depth: 0,
            address,
            block_number: env.block_number,
            timestamp: env.timestamp,
            chain_id: env.chain_id,
            is_static: env.is_static,
            gas_limit: env.gas_limit,
            gas_used: 0,
        }
    }

    /// Gas the calls made through this host have used.
    pub fn gas_used(&self) -> u64 {
        self.gas_used
    }

    /// Calls `module` from this host's account, sending `value`, as one module calls another:
    /// the value moves first, and a failed call undoes all it did, the move included.
    pub fn call(
        &mut self,
        module: &dyn NativeModule,
        input: &[u8],
        value: U256,
    ) -> Result<Bytes, ModuleError> {
        self.charge(CALL_BASE_GAS)?;
        if self.depth + 1 >= MAX_MODULE_DEPTH || (self.is_static && !value.is_zero()) {
            return Err(ModuleError::Revert(Bytes::new()));
        }
        let to = module.address();
        // The journal reads and writes slots only of accounts it has loaded.
        self.journal.load_account(to).map_err(fatal)?;
        let checkpoint = self.journal.checkpoint();
        // As with the EVM's CALL, sending more than the caller holds fails the call.
        if !value.is_zero()
            && self
                .journal
                .transfer(self.address, to, value)
                .map_err(fatal)?
                .is_some()
        {
            self.journal.checkpoint_revert(checkpoint);
            return Err(ModuleError::Revert(Bytes::new()));
        }
        let mut callee = JournalHost {
            journal: &mut *self.journal,
            modules: self.modules,
            depth: self.depth + 1,
            address: to,
            block_number: self.block_number,
            timestamp: self.timestamp,
            chain_id: self.chain_id,
            is_static: self.is_static,
            gas_limit: self.gas_limit - self.gas_used,
            gas_used: 0,
        };
        let call = ModuleCall {
            caller: self.address,
            value,
            input,
            is_static: self.is_static,
        };
        let result = module.call(call, &mut callee);
        self.gas_used += callee.gas_used;
        match result {
            Ok(output) => {
                self.journal.checkpoint_commit();
                Ok(output)
            }
            Err(e) => {
                self.journal.checkpoint_revert(checkpoint);
                Err(e)
            }
        }
    }

    fn writable(&self) -> Result<(), ModuleError> {
        if self.is_static {
            Err(ModuleError::Revert(Bytes::new()))
        } else {
            Ok(())
        }
    }

    /// Moves OPEN out of the module's account; a module sending more than it holds is a bug.
    fn transfer_checked(&mut self, to: Address, amount: U256) -> Result<(), ModuleError> {
        if amount.is_zero() {
            return Ok(());
        }
        match self
            .journal
            .transfer(self.address, to, amount)
            .map_err(fatal)?
        {
            None => Ok(()),
            Some(e) => Err(ModuleError::Fatal(format!(
                "transfer of {amount} to {to}: {e:?}"
            ))),
        }
    }
}

fn fatal(e: impl std::fmt::Display) -> ModuleError {
    ModuleError::Fatal(e.to_string())
}

impl<J: JournalTr> ModuleHost for JournalHost<'_, J> {
    fn address(&self) -> Address {
        self.address
    }

    fn block_number(&self) -> u64 {
        self.block_number
    }

    fn timestamp(&self) -> u64 {
        self.timestamp
    }

    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn sload(&mut self, slot: U256) -> Result<U256, ModuleError> {
        self.charge(SLOAD_GAS)?;
        Ok(self.journal.sload(self.address, slot).map_err(fatal)?.data)
    }

    fn sload_from(&mut self, address: Address, slot: U256) -> Result<U256, ModuleError> {
        self.charge(SLOAD_GAS)?;
        // The journal reads slots only of accounts it has loaded.
        self.journal.load_account(address).map_err(fatal)?;
        Ok(self.journal.sload(address, slot).map_err(fatal)?.data)
    }

    fn sstore(&mut self, slot: U256, value: U256) -> Result<(), ModuleError> {
        self.writable()?;
        self.charge(SSTORE_GAS)?;
        self.journal
            .sstore(self.address, slot, value)
            .map_err(fatal)?;
        Ok(())
    }

    fn balance(&mut self, address: Address) -> Result<U256, ModuleError> {
        self.charge(BALANCE_GAS)?;
        Ok(self
            .journal
            .load_account(address)
            .map_err(fatal)?
            .data
            .info
            .balance)
    }

    fn transfer(&mut self, to: Address, amount: U256) -> Result<(), ModuleError> {
        self.writable()?;
        self.charge(TRANSFER_GAS)?;
        self.transfer_checked(to, amount)
    }

    fn log(&mut self, topics: Vec<B256>, data: Bytes) -> Result<(), ModuleError> {
        self.writable()?;
        self.charge(
            LOG_GAS + LOG_TOPIC_GAS * topics.len() as u64 + LOG_BYTE_GAS * data.len() as u64,
        )?;
        let data = LogData::new(topics, data).ok_or_else(|| fatal("more than 4 log topics"))?;
        self.journal.log(Log {
            address: self.address,
            data,
        });
        Ok(())
    }

    fn charge(&mut self, gas: u64) -> Result<(), ModuleError> {
        let used = self.gas_used.saturating_add(gas);
        if used > self.gas_limit {
            self.gas_used = self.gas_limit;
            return Err(ModuleError::OutOfGas);
        }
        self.gas_used = used;
        Ok(())
    }

    fn call_module(
        &mut self,
        to: Address,
        input: &[u8],
        value: U256,
    ) -> Result<Bytes, ModuleError> {
        let Some(module) = self.modules.get(&to).cloned() else {
            self.charge(CALL_BASE_GAS)?;
            return Err(ModuleError::Revert(Bytes::new()));
        };
        self.call(module.as_ref(), input, value)
    }
}
