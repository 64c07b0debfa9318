//! The chain: the store, the pool and block production behind one handle that the RPC server,
//! the block producer and the node's services share.

use std::sync::Arc;

use alloy_consensus::{ReceiptEnvelope, Transaction, TypedTransaction};
use alloy_eips::{eip1559::BaseFeeParams, eip2718::Encodable2718};
use alloy_primitives::{Address, B256, Bloom, Bytes, U256};
use parking_lot::{Mutex, RwLock};
use revm::{
    ExecuteEvm,
    context::{BlockEnv, CfgEnv, TxEnv},
    context_interface::{
        block::BlobExcessGasAndPrice,
        result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction},
    },
    primitives::eip4844::BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE,
};
use tokio::sync::{Notify, broadcast, watch};

use openledger_primitives::Genesis;

use crate::{
    block::{BlockContents, BlockInfo, BlockParams, SealedHeader, build_header},
    clock::{Clock, Mining},
    diff::StateDiff,
    evm::{BlockExecutor, FeeRouting, SPEC, TxRejected, build_evm, cfg_env},
    mempool::{Mempool, PoolError, PoolLimits, PooledTx},
    modules::Modules,
    state::{Overlay, StateAt, StateEdit},
    store::{BlockWrite, Store, StoreError, StoreReader, StoredBody, chain_identity},
    trie::{EMPTY_ROOT_HASH, TrieError},
    validation::{
        CheckedTx, TxError, check_account, check_fee_cap, check_raw, check_unsigned, impersonated,
    },
};

/// A failure of the chain itself (not of a user's input).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state trie could not be read.
    #[error(transparent)]
    Trie(#[from] TrieError),
    /// Execution failed in a way that is not the transaction's fault.
    #[error("execution: {0}")]
    Execution(#[source] EVMError<StoreError>),
    /// A stored block's transaction does not decode.
    #[error("execution: stored transaction: {0}")]
    StoredTransaction(#[source] alloy_eips::eip2718::Eip2718Error),
    /// A stored block's transaction failed to run again: the store or the rules changed under
    /// it.
    #[error("execution: replaying the block: {0}")]
    Replay(#[source] Box<TxRejected>),
}

/// Why a submitted transaction was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The transaction is invalid.
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// The pool refused it.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The node failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl From<StoreError> for SubmitError {
    fn from(e: StoreError) -> Self {
        SubmitError::Chain(e.into())
    }
}

/// What happens on the chain, for subscribers.
#[derive(Debug, Clone)]
pub enum ChainEvent {
    /// A block was committed.
    Block(Arc<BlockInfo>),
    /// A transaction entered the pool.
    PendingTransaction(B256),
}

/// Settings of a chain.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    /// Chain id, first block and initial state.
    pub genesis: Genesis,
    /// Native modules.
    pub modules: Modules,
    /// Pool limits.
    pub pool: PoolLimits,
}

/// The outcome of an `eth_call`-style execution.
pub type CallResult = ExecutionResult<HaltReason>;

/// Why a call could not run.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call is invalid (gas, balance, nonce...).
    #[error("{0}")]
    Invalid(String),
    /// A view reverted, with the revert data (a module's custom error).
    #[error("execution reverted: {0}")]
    Reverted(Bytes),
    /// The node failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl From<StoreError> for CallError {
    fn from(e: StoreError) -> Self {
        CallError::Chain(e.into())
    }
}

/// The chain.
pub struct Chain {
    store: Store,
    genesis: Genesis,
    modules: Modules,
    cfg: CfgEnv,
    head: RwLock<SealedHeader>,
    pool: Mutex<Mempool>,
    build: Mutex<()>,
    events: broadcast::Sender<ChainEvent>,
    tx_arrived: Notify,
    /// When the block producer seals blocks; dev methods change it.
    mining: watch::Sender<Mining>,
    /// What blocks are stamped with: the wall clock, moved by the dev methods.
    clock: Clock,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("chain_id", &self.genesis.chain_id)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// Opens the chain in `store`, writing the genesis block if the store is new.
    pub fn open(store: Store, config: ChainConfig) -> Result<Self, ChainError> {
        let cfg = cfg_env(config.genesis.chain_id, SPEC);
        let (events, _) = broadcast::channel(1024);
        let genesis_header = genesis_block(&store, &config.genesis, &config.modules)?;
        store.check_chain(&chain_identity(
            genesis_header.hash,
            config.genesis.chain_id,
        ))?;
        let reader = store.reader()?;
        let head_number = reader.head()?.unwrap_or(0);
        let head = reader
            .header(head_number)?
            .ok_or_else(|| StoreError::Corrupt(format!("head block {head_number} is missing")))?;
        Ok(Self {
            store,
            genesis: config.genesis,
            modules: config.modules,
            cfg,
            head: RwLock::new(SealedHeader::seal(head)),
            pool: Mutex::new(Mempool::new(config.pool)),
            build: Mutex::new(()),
            events,
            tx_arrived: Notify::new(),
            mining: watch::Sender::new(Mining::Manual),
            clock: Clock::default(),
        })
    }

    /// When blocks are sealed now.
    pub fn mining(&self) -> Mining {
        *self.mining.borrow()
    }

    /// Changes when blocks are sealed (the producer follows at once); switching to sealing on
    /// arrival seals what already waits in the pool.
    pub fn set_mining(&self, mining: Mining) {
        self.mining.send_replace(mining);
        if mining == Mining::OnArrival && !self.pool.lock().is_empty() {
            self.tx_arrived.notify_one();
        }
    }

    /// Follows changes of [`Chain::mining`].
    pub fn watch_mining(&self) -> watch::Receiver<Mining> {
        self.mining.subscribe()
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.genesis.chain_id
    }

    /// The genesis the chain was opened with.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The native modules.
    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    /// The time the block producer stamps the next block with: the wall clock, moved by the
    /// dev methods through [`Chain::clock`]. Block timestamps still only ever increase.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The block clock, which dev chains move so that time-locked protocol steps (voting
    /// periods, unbonding) can be tried without waiting. Its moves live in memory only.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A consistent snapshot of the store.
    pub fn reader(&self) -> Result<StoreReader, ChainError> {
        Ok(self.store.reader()?)
    }

    /// The newest committed block's header.
    pub fn head(&self) -> SealedHeader {
        self.head.read().clone()
    }

    /// Subscribes to chain events.
    pub fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }

    /// Resolves when a transaction enters the pool, or when a block was sealed with pooled
    /// transactions left out for lack of gas (for instant mining: those are waiting too).
    pub async fn transaction_arrived(&self) {
        self.tx_arrived.notified().await
    }

    /// The base fee of the next block.
    pub fn next_base_fee(&self) -> u64 {
        next_base_fee(&self.head().header)
    }

    /// Validates a raw transaction and adds it to the pool; returns its hash.
    pub fn submit_raw(&self, raw: &[u8]) -> Result<B256, SubmitError> {
        let checked = check_raw(raw, self.chain_id(), self.genesis.gas_limit)?;
        self.pool_checked(checked)
    }

    /// Admits `tx` as sent by `sender` without a signature to recover it from: a dev chain's
    /// impersonated account (`anvil_impersonateAccount`). The transaction carries a placeholder
    /// signature made from the sender, so that its hash is its own; blocks store the sender.
    pub fn submit_as(&self, tx: TypedTransaction, sender: Address) -> Result<B256, SubmitError> {
        let checked = check_unsigned(
            impersonated(tx, sender),
            sender,
            self.chain_id(),
            self.genesis.gas_limit,
        )?;
        self.pool_checked(checked)
    }

    fn pool_checked(&self, checked: CheckedTx) -> Result<B256, SubmitError> {
        check_fee_cap(&checked.tx, checked.sender, self.next_base_fee())?;
        let reader = self.reader()?;
        let account = reader.account(&checked.sender)?.unwrap_or_default();
        check_account(&checked.tx, account.nonce, account.balance)?;
        let hash = *checked.tx.tx_hash();
        let pooled = PooledTx {
            tx: Arc::new(checked.tx),
            hash,
            sender: checked.sender,
        };
        self.pool.lock().add(pooled, account.nonce)?;
        let _ = self.events.send(ChainEvent::PendingTransaction(hash));
        self.tx_arrived.notify_one();
        Ok(hash)
    }

    /// Whether no transaction waits in the pool.
    pub fn pool_is_empty(&self) -> bool {
        self.pool.lock().is_empty()
    }

    /// A pooled (not yet included) transaction.
    pub fn pooled(&self, hash: &B256) -> Option<PooledTx> {
        self.pool.lock().get(hash).cloned()
    }

    /// The nonce of `address`'s next transaction, counting pooled ones.
    pub fn pending_nonce(&self, address: &Address) -> Result<u64, ChainError> {
        let nonce = self.reader()?.account(address)?.map_or(0, |a| a.nonce);
        Ok(self.pool.lock().next_nonce(address, nonce))
    }

    /// Pending and queued transaction counts.
    pub fn pool_counts(&self) -> Result<(usize, usize), ChainError> {
        let reader = self.reader()?;
        let pool = self.pool.lock();
        let nonces = state_nonces(&reader, pool.senders())?;
        Ok(pool.counts(|s| nonces.get(s).copied().unwrap_or_default()))
    }

    /// Builds, executes and durably commits the next block with the best pooled transactions.
    /// The block is on disk before this returns and before any subscriber hears of it.
    pub fn produce_block(&self, timestamp: u64) -> Result<Arc<BlockInfo>, ChainError> {
        self.produce_block_with(timestamp, &[])
    }

    /// Seals a block that makes `edits` (a dev chain's `anvil_setBalance` and kin) and nothing
    /// else, so that the state root and every later query cover them at once, and a replay of
    /// any block's transactions from its parent's state (a trace) is exact.
    pub fn edit_state(&self, edits: &[StateEdit]) -> Result<Arc<BlockInfo>, ChainError> {
        let block = self.produce_block_with(self.now(), edits)?;
        if !self.pool.lock().is_empty() {
            // What waits in the pool goes in the next block, which a zero block time seals now.
            self.tx_arrived.notify_one();
        }
        Ok(block)
    }

    /// Makes block `number` the head again, dropping every later block and what it changed (a
    /// dev chain's `evm_revert`). The transactions those blocks held go with them; they are not
    /// pooled again.
    pub fn revert_to(&self, number: u64) -> Result<(), ChainError> {
        let _building = self.build.lock();
        self.store.unwind_to(number)?;
        let header = self.reader()?.header(number)?.ok_or_else(|| {
            StoreError::Corrupt(format!("block {number} is missing after an unwind"))
        })?;
        *self.head.write() = SealedHeader::seal(header);
        Ok(())
    }

    fn produce_block_with(
        &self,
        timestamp: u64,
        edits: &[StateEdit],
    ) -> Result<Arc<BlockInfo>, ChainError> {
        let _building = self.build.lock();
        let parent = self.head();
        let reader = self.reader()?;
        let params = BlockParams {
            number: parent.header.number + 1,
            parent_hash: parent.hash,
            timestamp: self
                .clock
                .take_for_block(timestamp)
                .max(parent.header.timestamp.saturating_add(1)),
            gas_limit: self.genesis.gas_limit,
            base_fee: next_base_fee(&parent.header),
            beneficiary: self.genesis.coinbase,
            prevrandao: BlockParams::prevrandao_for(parent.hash),
            extra_data: Bytes::new(),
        };
        let candidates = if !edits.is_empty() {
            Vec::new()
        } else {
            let pool = self.pool.lock();
            let nonces = state_nonces(&reader, pool.senders())?;
            pool.best(params.base_fee, |s| {
                nonces.get(s).copied().unwrap_or_default()
            })
        };
        let state = StateAt::new(&reader, parent.header.number, parent.header.number);
        let mut overlay = Overlay::new(state);
        for edit in edits {
            overlay.edit(edit)?;
        }
        let mut executor = BlockExecutor::new(
            overlay,
            self.cfg.clone(),
            block_env(&params),
            &self.modules,
            self.fees(),
        );
        // Sized up front: blocks of tens of thousands of transactions otherwise spend a
        // measurable share of their production time growing this vector into fresh pages.
        let mut included: Vec<(PooledTx, ReceiptEnvelope)> = Vec::with_capacity(candidates.len());
        let mut dropped: Vec<B256> = Vec::new();
        let mut skipped_senders: Vec<Address> = Vec::new();
        let mut left_for_gas = false;
        for candidate in candidates {
            if skipped_senders.contains(&candidate.sender) {
                continue;
            }
            match executor.execute(&candidate.tx, candidate.sender) {
                Ok(executed) => included.push((candidate, executed.receipt)),
                Err(TxRejected::Store(e)) => return Err(ChainError::Execution(e)),
                Err(TxRejected::BlockFull { .. }) => {
                    left_for_gas = true;
                    skipped_senders.push(candidate.sender);
                }
                Err(TxRejected::Invalid(reason)) => {
                    tracing::debug!(tx = %candidate.hash, %reason, "dropping invalid transaction");
                    skipped_senders.push(candidate.sender);
                    dropped.push(candidate.hash);
                }
            }
        }
        let gas_used = executor.gas_used();
        let diff = executor
            .finish()
            .into_diff(parent.header.state_root, &reader)?;
        let block = self.commit(&params, included, gas_used, &diff)?;
        self.after_commit(&block, &dropped);
        if left_for_gas {
            self.tx_arrived.notify_one();
        }
        Ok(block)
    }

    pub(crate) fn fees(&self) -> FeeRouting {
        FeeRouting {
            base_fee_recipient: self.genesis.base_fee_recipient,
        }
    }

    fn commit(
        &self,
        params: &BlockParams,
        included: Vec<(PooledTx, ReceiptEnvelope)>,
        gas_used: u64,
        diff: &StateDiff,
    ) -> Result<Arc<BlockInfo>, ChainError> {
        let (txs, receipts): (Vec<PooledTx>, Vec<ReceiptEnvelope>) = included.into_iter().unzip();
        let transactions: Vec<Bytes> = txs.iter().map(|t| t.tx.encoded_2718().into()).collect();
        let encoded_receipts: Vec<Bytes> =
            receipts.iter().map(|r| r.encoded_2718().into()).collect();
        let contents = BlockContents {
            transactions: &transactions,
            receipts: &encoded_receipts,
            logs_bloom: receipts
                .iter()
                .fold(Bloom::ZERO, |acc, r| acc | *r.logs_bloom()),
            gas_used,
        };
        let sealed = SealedHeader::seal(build_header(params, diff.state_root, contents));
        let tx_hashes: Vec<B256> = txs.iter().map(|t| t.hash).collect();
        let body = StoredBody {
            transactions,
            senders: txs.iter().map(|t| t.sender).collect(),
        };
        self.store.write_block(BlockWrite {
            header: &sealed.header,
            hash: sealed.hash,
            body: &body,
            tx_hashes: &tx_hashes,
            receipts: &encoded_receipts,
            diff,
        })?;
        *self.head.write() = sealed.clone();
        let transactions = txs.into_iter().map(|t| (t.hash, t.sender, t.tx)).collect();
        Ok(Arc::new(BlockInfo {
            header: sealed,
            transactions,
            receipts,
        }))
    }

    fn after_commit(&self, block: &Arc<BlockInfo>, dropped: &[B256]) {
        {
            let mut pool = self.pool.lock();
            for hash in dropped {
                pool.discard(hash);
            }
            for (_, sender, tx) in &block.transactions {
                pool.prune_sender(sender, tx.nonce() + 1);
            }
        }
        let _ = self.events.send(ChainEvent::Block(block.clone()));
    }

    /// Executes a call against the state after block `number` without committing anything
    /// (`eth_call`, `eth_estimateGas`). The base fee is not enforced, so a zero gas price works.
    pub fn call(&self, tx: TxEnv, number: u64) -> Result<CallResult, CallError> {
        let reader = self.reader()?;
        let header = reader
            .header(number)?
            .ok_or_else(|| CallError::Invalid(format!("block {number} not found")))?;
        self.call_in(&reader, tx, number, params_of(&header))
    }

    /// Executes a call on the head state as the next block would run it: its number and the
    /// timestamp the producer would give it. Gas estimates use this, since what a transaction
    /// costs can depend on the block it lands in (a module writing a new checkpoint per second).
    pub fn call_next(&self, tx: TxEnv) -> Result<CallResult, CallError> {
        let head = self.head();
        let params = BlockParams {
            number: head.header.number + 1,
            parent_hash: head.hash,
            timestamp: self.now().max(head.header.timestamp.saturating_add(1)),
            gas_limit: head.header.gas_limit,
            base_fee: next_base_fee(&head.header),
            beneficiary: self.genesis.coinbase,
            prevrandao: BlockParams::prevrandao_for(head.hash),
            extra_data: Bytes::new(),
        };
        self.call_in(&self.reader()?, tx, head.header.number, params)
    }

    fn call_in(
        &self,
        reader: &StoreReader,
        mut tx: TxEnv,
        number: u64,
        params: BlockParams,
    ) -> Result<CallResult, CallError> {
        let head = self.head().header.number;
        let cfg = self.call_cfg(&mut tx);
        let state = Overlay::new(StateAt::new(reader, number, head));
        let mut evm = build_evm(state, cfg, block_env(&params), &self.modules);
        match evm.transact(tx) {
            Ok(out) => Ok(out.result),
            Err(EVMError::Transaction(e)) => Err(CallError::Invalid(invalid_message(&e))),
            Err(e) => Err(CallError::Chain(ChainError::Execution(e))),
        }
    }

    /// The rules a call runs under (no base fee, no nonce check: `eth_call` and its kin), with
    /// `tx` made to fit them.
    pub(crate) fn call_cfg(&self, tx: &mut TxEnv) -> CfgEnv {
        let mut cfg = self.cfg.clone();
        cfg.disable_base_fee = true;
        cfg.disable_nonce_check = true;
        if tx.gas_price == 0 {
            tx.gas_priority_fee = None;
        }
        tx.chain_id = Some(self.chain_id());
        cfg
    }

    /// The rules blocks run under.
    pub(crate) fn cfg(&self) -> &CfgEnv {
        &self.cfg
    }

    /// Calls a contract or module view at the head with `input`; its return data, or an error
    /// naming the revert data or halt. For node services that read state in process.
    pub fn view(&self, to: Address, input: Bytes) -> Result<Bytes, CallError> {
        let head = self.head().header;
        let tx = TxEnv {
            kind: alloy_primitives::TxKind::Call(to),
            data: input,
            gas_limit: head.gas_limit,
            ..Default::default()
        };
        match self.call(tx, head.number)? {
            ExecutionResult::Success { output, .. } => Ok(output.into_data()),
            ExecutionResult::Revert { output, .. } => Err(CallError::Reverted(output)),
            ExecutionResult::Halt { reason, .. } => {
                Err(CallError::Invalid(format!("execution halted: {reason:?}")))
            }
        }
    }

    /// The account balance after block `number`, as seen by the state at that block.
    pub fn balance_at(&self, address: &Address, number: u64) -> Result<U256, ChainError> {
        let reader = self.reader()?;
        let head = self.head().header.number;
        let state = StateAt::new(&reader, number, head);
        Ok(crate::state::StateReader::account(&state, address)?.map_or(U256::ZERO, |a| a.balance))
    }
}

/// The message clients expect for a transaction revm refused.
pub fn invalid_message(e: &InvalidTransaction) -> String {
    match e {
        InvalidTransaction::LackOfFundForMaxFee { fee, balance } => {
            format!("insufficient funds for gas * price + value: balance {balance}, tx cost {fee}")
        }
        InvalidTransaction::CallGasCostMoreThanGasLimit {
            initial_gas,
            gas_limit,
        } => {
            format!("intrinsic gas too low: have {gas_limit}, want {initial_gas}")
        }
        other => other.to_string(),
    }
}

fn state_nonces<'a>(
    reader: &StoreReader,
    senders: impl Iterator<Item = &'a Address>,
) -> Result<std::collections::HashMap<Address, u64>, StoreError> {
    senders
        .map(|s| Ok((*s, reader.account(s)?.map_or(0, |a| a.nonce))))
        .collect()
}

fn next_base_fee(parent: &alloy_consensus::Header) -> u64 {
    parent
        .next_block_base_fee(BaseFeeParams::ethereum())
        .unwrap_or_default()
}

/// The parameters a stored block was sealed with.
pub(crate) fn params_of(header: &alloy_consensus::Header) -> BlockParams {
    BlockParams {
        number: header.number,
        parent_hash: header.parent_hash,
        timestamp: header.timestamp,
        gas_limit: header.gas_limit,
        base_fee: header.base_fee_per_gas.unwrap_or_default(),
        beneficiary: header.beneficiary,
        prevrandao: header.mix_hash,
        extra_data: Bytes::new(),
    }
}

pub(crate) fn block_env(params: &BlockParams) -> BlockEnv {
    BlockEnv {
        number: U256::from(params.number),
        beneficiary: params.beneficiary,
        timestamp: U256::from(params.timestamp),
        gas_limit: params.gas_limit,
        basefee: params.base_fee,
        difficulty: U256::ZERO,
        prevrandao: Some(params.prevrandao),
        blob_excess_gas_and_price: Some(BlobExcessGasAndPrice::new(
            0,
            BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE,
        )),
        ..Default::default()
    }
}

/// Writes block 0 from the genesis allocation if the store is empty; returns its header.
fn genesis_block(
    store: &Store,
    genesis: &Genesis,
    modules: &Modules,
) -> Result<SealedHeader, ChainError> {
    let reader = store.reader()?;
    if let Some(header) = reader.header(0)? {
        return Ok(SealedHeader::seal(header));
    }
    let diff = genesis_state(&reader, genesis, modules)?;
    let params = BlockParams {
        number: 0,
        parent_hash: B256::ZERO,
        timestamp: genesis.timestamp,
        gas_limit: genesis.gas_limit,
        base_fee: genesis.base_fee_per_gas,
        beneficiary: genesis.coinbase,
        prevrandao: B256::ZERO,
        extra_data: genesis.extra_data.clone(),
    };
    let sealed = SealedHeader::seal(build_header(&params, diff.state_root, BlockContents::EMPTY));
    store.write_block(BlockWrite {
        header: &sealed.header,
        hash: sealed.hash,
        body: &StoredBody::default(),
        tx_hashes: &[],
        receipts: &[],
        diff: &diff,
    })?;
    Ok(sealed)
}

/// The state diff that creates the genesis allocation on an empty store, with every module's
/// account and its genesis storage (its parameters).
pub fn genesis_state(
    reader: &StoreReader,
    genesis: &Genesis,
    modules: &Modules,
) -> Result<StateDiff, ChainError> {
    let mut alloc = genesis.alloc.clone();
    for module in modules.iter() {
        let account = alloc.entry(module.address()).or_default();
        // Nonce 1, as for a deployed contract, so that EIP-161 never clears a module's account
        // (and its storage) as empty when a call touches it.
        account.nonce = account.nonce.max(1);
        account.storage.extend(
            module
                .genesis_storage(genesis)
                .into_iter()
                .map(|(slot, value)| (B256::from(slot), B256::from(value))),
        );
    }
    let mut overlay = Overlay::new(StateAt::new(reader, 0, 0));
    for (address, account) in &alloc {
        let storage = account
            .storage
            .iter()
            .map(|(slot, value)| ((*slot).into(), (*value).into()));
        overlay.allocate(
            *address,
            account.balance,
            account.nonce,
            account.code.clone(),
            storage,
        );
    }
    Ok(overlay.into_diff(EMPTY_ROOT_HASH, reader)?)
}
