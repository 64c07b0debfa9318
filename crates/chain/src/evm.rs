//! Transaction execution with revm: the EVM wired with the chain's precompiles, the conversion of
//! signed transactions to revm's input, and a block executor that applies transactions one after
//! another and keeps the receipts.

use alloy_consensus::{
    Eip658Value, Receipt, ReceiptEnvelope, ReceiptWithBloom, Transaction, TxEnvelope, TxType,
};
use alloy_primitives::{Address, B256, Log, U256};
use revm::{
    Database, ExecuteEvm, InspectEvm, Inspector,
    context::{BlockEnv, CfgEnv, Context, Evm, FrameStack, Journal, TxEnv},
    context_interface::result::{
        EVMError, ExecutionResult, HaltReason, InvalidTransaction, ResultAndState,
    },
    handler::{EthFrame, instructions::EthInstructions},
    interpreter::interpreter::EthInterpreter,
    primitives::hardfork::SpecId,
};

use crate::{
    modules::{ChainPrecompiles, Modules},
    state::{Overlay, StateReader},
    store::StoreError,
};

/// The EVM rules the chain runs.
pub const SPEC: SpecId = SpecId::PRAGUE;

/// The revm context over database `DB`.
pub type ChainContext<DB> = Context<BlockEnv, TxEnv, CfgEnv, DB, Journal<DB>, ()>;

/// The EVM with the chain's precompiles and native modules, watched by inspector `I` when a
/// trace is asked for.
pub type ChainEvm<DB, I = ()> = Evm<
    ChainContext<DB>,
    I,
    EthInstructions<EthInterpreter, ChainContext<DB>>,
    ChainPrecompiles,
    EthFrame<EthInterpreter>,
>;

/// Builds an EVM over `db` for one block.
pub fn build_evm<DB: Database>(
    db: DB,
    cfg: CfgEnv,
    block: BlockEnv,
    modules: &Modules,
) -> ChainEvm<DB> {
    build_evm_with(db, cfg, block, modules, ())
}

/// Builds an EVM over `db` for one block, with `inspector` watching what it runs.
pub fn build_evm_with<DB: Database, I>(
    db: DB,
    cfg: CfgEnv,
    block: BlockEnv,
    modules: &Modules,
    inspector: I,
) -> ChainEvm<DB, I> {
    let spec = cfg.spec;
    let mut ctx: ChainContext<DB> = Context::new(db, spec);
    ctx.cfg = cfg;
    ctx.block = block;
    Evm {
        ctx,
        inspector,
        instruction: EthInstructions::new_mainnet_with_spec(spec),
        precompiles: ChainPrecompiles::new(spec, modules.clone()),
        frame_stack: FrameStack::new_prealloc(8),
    }
}

/// The EVM configuration of a chain.
pub fn cfg_env(chain_id: u64, spec: SpecId) -> CfgEnv {
    let mut cfg = CfgEnv::new_with_spec(spec);
    cfg.chain_id = chain_id;
    cfg
}

/// revm's input for a signed transaction from `sender`.
pub fn tx_env(tx: &TxEnvelope, sender: Address) -> TxEnv {
    let mut env = TxEnv {
        tx_type: tx.tx_type() as u8,
        caller: sender,
        gas_limit: tx.gas_limit(),
        gas_price: tx.max_fee_per_gas(),
        kind: tx.kind(),
        value: tx.value(),
        data: tx.input().clone(),
        nonce: tx.nonce(),
        chain_id: tx.chain_id(),
        access_list: tx.access_list().cloned().unwrap_or_default(),
        gas_priority_fee: tx.max_priority_fee_per_gas(),
        blob_hashes: tx
            .blob_versioned_hashes()
            .map(<[B256]>::to_vec)
            .unwrap_or_default(),
        max_fee_per_blob_gas: tx.max_fee_per_blob_gas().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(auths) = tx.authorization_list() {
        env.set_signed_authorization(auths.to_vec());
    }
    env
}

/// Where fees go.
#[derive(Debug, Clone, Copy)]
pub struct FeeRouting {
    /// Receiver of the base fee; `None` burns it (Ethereum's rule).
    pub base_fee_recipient: Option<Address>,
}

/// A transaction the block could not include.
#[derive(Debug, thiserror::Error)]
pub enum TxRejected {
    /// The transaction is invalid against the current state (nonce, balance, gas).
    #[error("{0}")]
    Invalid(InvalidTransaction),
    /// It does not fit in the block's remaining gas.
    #[error("transaction gas limit {gas} exceeds the block's remaining gas {remaining}")]
    BlockFull {
        /// The transaction's gas limit.
        gas: u64,
        /// Gas left in the block.
        remaining: u64,
    },
    /// The store failed; the block must be abandoned.
    #[error("store: {0}")]
    Store(#[source] EVMError<StoreError>),
}

impl From<EVMError<StoreError>> for TxRejected {
    fn from(e: EVMError<StoreError>) -> Self {
        match e {
            EVMError::Transaction(invalid) => TxRejected::Invalid(invalid),
            other => TxRejected::Store(other),
        }
    }
}

/// The outcome of one included transaction.
#[derive(Debug, Clone)]
pub struct Executed {
    /// Gas used by the transaction.
    pub gas_used: u64,
    /// The execution result (success with output, revert with data, or halt).
    pub result: ExecutionResult<HaltReason>,
    /// The receipt.
    pub receipt: ReceiptEnvelope,
}

/// Applies transactions to a block in order; inspector `I` watches the ones run with
/// [`BlockExecutor::inspect`].
pub struct BlockExecutor<S: StateReader, I = ()> {
    evm: ChainEvm<Overlay<S>, I>,
    fees: FeeRouting,
    cumulative_gas: u64,
}

impl<S: StateReader> BlockExecutor<S> {
    /// An executor applying the block described by `block` on top of `state`.
    pub fn new(
        state: Overlay<S>,
        cfg: CfgEnv,
        block: BlockEnv,
        modules: &Modules,
        fees: FeeRouting,
    ) -> Self {
        Self::with_inspector(state, cfg, block, modules, fees, ())
    }
}

impl<S: StateReader, I> BlockExecutor<S, I> {
    /// An executor whose [`BlockExecutor::inspect`] runs transactions under `inspector`.
    pub fn with_inspector(
        state: Overlay<S>,
        cfg: CfgEnv,
        block: BlockEnv,
        modules: &Modules,
        fees: FeeRouting,
        inspector: I,
    ) -> Self {
        Self {
            evm: build_evm_with(state, cfg, block, modules, inspector),
            fees,
            cumulative_gas: 0,
        }
    }

    /// Gas used so far.
    pub fn gas_used(&self) -> u64 {
        self.cumulative_gas
    }

    /// The block's environment.
    pub fn block(&self) -> &BlockEnv {
        &self.evm.ctx.block
    }

    /// Executes `tx` from `sender` and commits its changes to the block's state.
    pub fn execute(&mut self, tx: &TxEnvelope, sender: Address) -> Result<Executed, TxRejected> {
        self.execute_env(tx_env(tx, sender))
    }

    /// Executes an already converted transaction (the state-test harness builds these directly).
    pub fn execute_env(&mut self, env: TxEnv) -> Result<Executed, TxRejected> {
        self.check_fits(&env)?;
        let tx_type = TxType::try_from(env.tx_type).unwrap_or(TxType::Legacy);
        let out = self.evm.transact(env)?;
        self.apply(tx_type, out)
    }

    fn check_fits(&self, env: &TxEnv) -> Result<(), TxRejected> {
        let remaining = self
            .evm
            .ctx
            .block
            .gas_limit
            .saturating_sub(self.cumulative_gas);
        if env.gas_limit > remaining {
            return Err(TxRejected::BlockFull {
                gas: env.gas_limit,
                remaining,
            });
        }
        Ok(())
    }

    /// Commits one transaction's outcome, routes its base fee and builds its receipt.
    fn apply(&mut self, tx_type: TxType, out: ResultAndState) -> Result<Executed, TxRejected> {
        let result = out.result;
        revm::DatabaseCommit::commit(self.db_mut(), out.state);
        let gas_used = result.tx_gas_used();
        self.route_base_fee(gas_used)?;
        self.cumulative_gas += gas_used;
        let logs: Vec<Log> = result.logs().to_vec();
        let receipt = build_receipt(tx_type, result.is_success(), self.cumulative_gas, logs);
        Ok(Executed {
            gas_used,
            result,
            receipt,
        })
    }

    /// Executes `tx` from `sender` under the inspector and commits it as [`BlockExecutor::execute`]
    /// does; `read` sees the inspector, the outcome and the state as it was before the
    /// transaction (what a prestate trace reports), and its answer comes back beside the outcome.
    pub fn inspect<T>(
        &mut self,
        tx: &TxEnvelope,
        sender: Address,
        read: impl FnOnce(&mut I, &TxEnv, &BlockEnv, &ResultAndState, &mut Overlay<S>) -> T,
    ) -> Result<(Executed, T), TxRejected>
    where
        I: Inspector<ChainContext<Overlay<S>>>,
    {
        let env = tx_env(tx, sender);
        self.check_fits(&env)?;
        let tx_type = TxType::try_from(env.tx_type).unwrap_or(TxType::Legacy);
        let out = self.evm.inspect_tx(env.clone())?;
        let seen = self.with_base_fee_credit(&out)?;
        let evm = &mut self.evm;
        let answer = read(
            &mut evm.inspector,
            &env,
            &evm.ctx.block,
            &seen,
            &mut evm.ctx.journaled_state.database,
        );
        Ok((self.apply(tx_type, out)?, answer))
    }

    /// `out` with the base fee credited to its recipient, as the commit will credit it outside
    /// the EVM: what a tracer is shown, so that a prestate diff balances.
    fn with_base_fee_credit(&self, out: &ResultAndState) -> Result<ResultAndState, TxRejected> {
        let mut seen = out.clone();
        let Some(recipient) = self.fees.base_fee_recipient else {
            return Ok(seen);
        };
        let fee = U256::from(self.evm.ctx.block.basefee) * U256::from(out.result.tx_gas_used());
        if fee.is_zero() {
            return Ok(seen);
        }
        let account = match seen.state.entry(recipient) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let info =
                    revm::DatabaseRef::basic_ref(&self.evm.ctx.journaled_state.database, recipient)
                        .map_err(|e| TxRejected::Store(EVMError::Database(e)))?
                        .unwrap_or_default();
                entry.insert(revm::state::Account::from(info))
            }
        };
        account.info.balance += fee;
        account.mark_touch();
        Ok(seen)
    }

    /// The inspector, as the last transaction left it.
    pub fn inspector(&self) -> &I {
        &self.evm.inspector
    }

    fn db_mut(&mut self) -> &mut Overlay<S> {
        &mut self.evm.ctx.journaled_state.database
    }

    fn route_base_fee(&mut self, gas_used: u64) -> Result<(), TxRejected> {
        if let Some(recipient) = self.fees.base_fee_recipient {
            let fee = U256::from(self.evm.ctx.block.basefee) * U256::from(gas_used);
            self.db_mut()
                .credit(recipient, fee)
                .map_err(|e| TxRejected::Store(EVMError::Database(e)))?;
        }
        Ok(())
    }

    /// Ends the block, returning the state changes.
    pub fn finish(self) -> Overlay<S> {
        self.evm.ctx.journaled_state.database
    }
}

/// An Ethereum receipt with its bloom.
pub fn build_receipt(
    tx_type: TxType,
    success: bool,
    cumulative_gas_used: u64,
    logs: Vec<Log>,
) -> ReceiptEnvelope {
    let receipt = Receipt {
        status: Eip658Value::Eip658(success),
        cumulative_gas_used,
        logs,
    };
    let with_bloom = ReceiptWithBloom::from(receipt);
    match tx_type {
        TxType::Legacy => ReceiptEnvelope::Legacy(with_bloom),
        TxType::Eip2930 => ReceiptEnvelope::Eip2930(with_bloom),
        TxType::Eip1559 => ReceiptEnvelope::Eip1559(with_bloom),
        TxType::Eip4844 => ReceiptEnvelope::Eip4844(with_bloom),
        TxType::Eip7702 => ReceiptEnvelope::Eip7702(with_bloom),
    }
}
