//! The `eth_*`, `net_*` and `web3_*` methods, as plain functions over the chain so they can be
//! tested without a server.

use std::sync::Arc;

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy_rpc_types_eth::{
    Block, EIP1186AccountProofResponse, EIP1186StorageProof, FeeHistory, Filter, FilterBlockOption,
    Log, Transaction, TransactionReceipt, TransactionRequest,
};
use alloy_serde::JsonStorageKey;
use openledger_chain::{
    CallResult, Chain, StoreReader, state::StateAt, state::StateReader, trie::EMPTY_ROOT_HASH,
    trie::proof,
};
use revm::{
    context::TxEnv,
    context_interface::result::{ExecutionResult, HaltReason},
};

use crate::{
    RpcConfig,
    convert::{TxLocation, decode_body, rpc_block, rpc_receipts, rpc_transaction},
    error::{RpcError, RpcResult},
};

/// The suggested priority fee: 1 gwei.
pub const DEFAULT_PRIORITY_FEE: u128 = 1_000_000_000;

/// Most blocks `eth_feeHistory` answers for at once.
pub const MAX_FEE_HISTORY_BLOCKS: u64 = 1024;

/// Most reward percentiles one `eth_feeHistory` may ask for (geth's limit): the answer grows
/// with blocks times percentiles.
pub const MAX_REWARD_PERCENTILES: usize = 100;

/// The state the Ethereum API reads: the chain plus the server's settings.
#[derive(Debug, Clone)]
pub struct EthApi {
    chain: Arc<Chain>,
    config: RpcConfig,
}

impl EthApi {
    /// The API over `chain`.
    pub fn new(chain: Arc<Chain>, config: RpcConfig) -> Self {
        Self { chain, config }
    }

    /// The chain.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// The server settings.
    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    fn reader(&self) -> RpcResult<(StoreReader, u64)> {
        let reader = self.chain.reader()?;
        let head = reader.head()?.unwrap_or_default();
        Ok((reader, head))
    }

    /// Resolves a block tag, number or hash to a block number that exists.
    pub fn resolve(&self, reader: &StoreReader, head: u64, id: BlockId) -> RpcResult<u64> {
        match id {
            BlockId::Hash(hash) => reader
                .block_number(&hash.block_hash)?
                .ok_or_else(|| RpcError::NotFound(format!("block {} not found", hash.block_hash))),
            BlockId::Number(tag) => {
                let number = resolve_tag(tag, head);
                if number > head {
                    return Err(RpcError::NotFound(format!(
                        "header not found: block {number} is beyond the head {head}"
                    )));
                }
                Ok(number)
            }
        }
    }

    fn state_query<T>(
        &self,
        id: Option<BlockId>,
        f: impl FnOnce(&StateAt<'_>, u64) -> RpcResult<T>,
    ) -> RpcResult<T> {
        let (reader, head) = self.reader()?;
        let number = self.resolve(&reader, head, id.unwrap_or_default())?;
        f(&StateAt::new(&reader, number, head), number)
    }

    /// `eth_blockNumber`.
    pub fn block_number(&self) -> u64 {
        self.chain.head().header.number
    }

    /// `eth_getBalance`.
    pub fn balance(&self, address: Address, id: Option<BlockId>) -> RpcResult<U256> {
        self.state_query(id, |state, _| {
            Ok(state.account(&address)?.map_or(U256::ZERO, |a| a.balance))
        })
    }

    /// `eth_getTransactionCount`; `pending` counts pooled transactions.
    pub fn transaction_count(&self, address: Address, id: Option<BlockId>) -> RpcResult<u64> {
        if matches!(id, Some(BlockId::Number(BlockNumberOrTag::Pending))) {
            return Ok(self.chain.pending_nonce(&address)?);
        }
        self.state_query(id, |state, _| {
            Ok(state.account(&address)?.map_or(0, |a| a.nonce))
        })
    }

    /// `eth_getCode`.
    pub fn code(&self, address: Address, id: Option<BlockId>) -> RpcResult<Bytes> {
        self.state_query(id, |state, _| {
            let Some(account) = state.account(&address)? else {
                return Ok(Bytes::new());
            };
            Ok(state.code(&account.code_hash)?.unwrap_or_default())
        })
    }

    /// `eth_getStorageAt`.
    pub fn storage_at(
        &self,
        address: Address,
        slot: JsonStorageKey,
        id: Option<BlockId>,
    ) -> RpcResult<B256> {
        self.state_query(id, |state, _| {
            Ok(state.storage(&address, &slot.as_b256().into())?.into())
        })
    }

    /// `eth_sendRawTransaction`.
    pub fn send_raw_transaction(&self, raw: Bytes) -> RpcResult<B256> {
        Ok(self.chain.submit_raw(&raw)?)
    }

    /// `eth_getBlockByNumber` / `eth_getBlockByHash`.
    pub fn block(&self, id: BlockId, full: bool) -> RpcResult<Option<Block>> {
        let (reader, head) = self.reader()?;
        let number = match id {
            BlockId::Hash(hash) => match reader.block_number(&hash.block_hash)? {
                Some(n) => n,
                None => return Ok(None),
            },
            BlockId::Number(tag) => resolve_tag(tag, head),
        };
        rpc_block(&reader, number, full)
    }

    /// `eth_getBlockTransactionCountBy*`.
    pub fn block_transaction_count(&self, id: BlockId) -> RpcResult<Option<u64>> {
        Ok(self.block(id, false)?.map(|b| b.transactions.len() as u64))
    }

    /// `eth_getTransactionByHash`: mined or pooled.
    pub fn transaction_by_hash(&self, hash: B256) -> RpcResult<Option<Transaction>> {
        let reader = self.chain.reader()?;
        if let Some((number, index)) = reader.tx_location(&hash)? {
            return self.transaction_in_block(&reader, number, index as u64);
        }
        Ok(self
            .chain
            .pooled(&hash)
            .map(|p| rpc_transaction((*p.tx).clone(), p.sender, None)))
    }

    /// `eth_getTransactionByBlock*AndIndex`.
    pub fn transaction_by_block_and_index(
        &self,
        id: BlockId,
        index: u64,
    ) -> RpcResult<Option<Transaction>> {
        let (reader, head) = self.reader()?;
        let number = match self.resolve(&reader, head, id) {
            Ok(n) => n,
            Err(RpcError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.transaction_in_block(&reader, number, index)
    }

    fn transaction_in_block(
        &self,
        reader: &StoreReader,
        number: u64,
        index: u64,
    ) -> RpcResult<Option<Transaction>> {
        let (Some(header), Some(body)) = (reader.header(number)?, reader.body(number)?) else {
            return Ok(None);
        };
        let hash = header.hash_slow();
        let Some((tx, sender)) = decode_body(&body)?.into_iter().nth(index as usize) else {
            return Ok(None);
        };
        Ok(Some(rpc_transaction(
            tx,
            sender,
            Some(TxLocation::new(&header, hash, index)),
        )))
    }

    /// `eth_getTransactionReceipt`.
    pub fn receipt(&self, hash: B256) -> RpcResult<Option<TransactionReceipt>> {
        let reader = self.chain.reader()?;
        let Some((number, index)) = reader.tx_location(&hash)? else {
            return Ok(None);
        };
        Ok(rpc_receipts(&reader, number)?.and_then(|r| r.into_iter().nth(index as usize)))
    }

    /// `eth_getBlockReceipts`.
    pub fn block_receipts(&self, id: BlockId) -> RpcResult<Option<Vec<TransactionReceipt>>> {
        let (reader, head) = self.reader()?;
        let number = match self.resolve(&reader, head, id) {
            Ok(n) => n,
            Err(RpcError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        rpc_receipts(&reader, number)
    }

    /// `eth_gasPrice`: the next base fee plus the suggested tip.
    pub fn gas_price(&self) -> u128 {
        self.chain.next_base_fee() as u128 + DEFAULT_PRIORITY_FEE
    }

    /// `eth_call`.
    pub fn call(&self, request: TransactionRequest, id: Option<BlockId>) -> RpcResult<Bytes> {
        let number = self.resolve_id(id.unwrap_or_default())?;
        let env = call_env(request, self.call_gas_cap(number)?)?;
        call_output(self.chain.call(env, number)?)
    }

    /// The number of the existing block `id` names.
    pub fn resolve_id(&self, id: BlockId) -> RpcResult<u64> {
        let (reader, head) = self.reader()?;
        self.resolve(&reader, head, id)
    }

    /// The most gas a call at block `number` may use: the configured cap, or the block's gas
    /// limit when lower.
    pub fn call_gas_cap(&self, number: u64) -> RpcResult<u64> {
        let block_gas = self
            .chain
            .reader()?
            .header(number)?
            .map_or(0, |h| h.gas_limit);
        Ok(self.config.call_gas_cap.min(block_gas))
    }

    /// `eth_estimateGas`: the least gas limit with which the call succeeds (within 1.5%).
    pub fn estimate_gas(&self, request: TransactionRequest, id: Option<BlockId>) -> RpcResult<u64> {
        let (reader, head) = self.reader()?;
        let number = self.resolve(&reader, head, id.unwrap_or_default())?;
        let header = reader
            .header(number)?
            .ok_or_else(|| RpcError::NotFound("block".into()))?;
        let mut env = call_env(request, header.gas_limit)?;
        let state = StateAt::new(&reader, number, head);
        let balance = state
            .account(&env.caller)?
            .map_or(U256::ZERO, |a| a.balance);
        let mut hi = env.gas_limit.min(header.gas_limit);
        // What the sender can pay for caps the gas: if that is what makes the call fail, the
        // answer is the funds, as geth and anvil say, not the gas.
        let mut short_of_funds = None;
        if env.gas_price > 0 {
            let affordable: u64 =
                (balance.saturating_sub(env.value) / U256::from(env.gas_price)).saturating_to();
            if affordable < hi || balance < env.value {
                hi = affordable;
                short_of_funds = Some(RpcError::Rejected(format!(
                    "insufficient funds for gas * price + value: balance {balance}, value {}, gas price {}: enough for {affordable} gas",
                    env.value, env.gas_price
                )));
            }
        }
        // At the head, estimate for the block the transaction will land in.
        let run = |gas: u64, env: &mut TxEnv| -> RpcResult<CallResult> {
            env.gas_limit = gas;
            Ok(if number == head {
                self.chain.call_next(env.clone())?
            } else {
                self.chain.call(env.clone(), number)?
            })
        };
        // Out of gas, or not even the intrinsic gas, at what the funds allow: the funds are why.
        let first = match (run(hi, &mut env), short_of_funds) {
            (
                Ok(ExecutionResult::Halt {
                    reason: HaltReason::OutOfGas(_),
                    ..
                }),
                Some(short),
            ) => {
                return Err(short);
            }
            (Err(RpcError::Rejected(message)), Some(short))
                if message.starts_with("intrinsic gas too low")
                    || message.starts_with("insufficient funds") =>
            {
                return Err(short);
            }
            (result, _) => result?,
        };
        let used = match &first {
            ExecutionResult::Success { .. } => first.tx_gas_used(),
            ExecutionResult::Revert { output, .. } => {
                return Err(RpcError::reverted(output.clone()));
            }
            ExecutionResult::Halt { reason, .. } => {
                return Err(RpcError::Rejected(format!(
                    "gas required exceeds allowance ({hi}): {}",
                    halt_message(reason)
                )));
            }
        };
        // Plain transfers and calls without refunds or 63/64 reservations need exactly what
        // they used.
        if used < hi && run(used, &mut env)?.is_success() {
            return Ok(used);
        }
        let mut lo = used;
        let optimistic = (used + 2_300) * 64 / 63;
        if optimistic < hi {
            if run(optimistic, &mut env)?.is_success() {
                hi = optimistic;
            } else {
                lo = optimistic;
            }
        }
        while lo + 1 < hi && (hi - lo) * 1000 / hi > 15 {
            let mid = lo + (hi - lo) / 2;
            if run(mid, &mut env)?.is_success() {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    /// `eth_feeHistory`.
    pub fn fee_history(
        &self,
        count: u64,
        newest: BlockNumberOrTag,
        percentiles: Option<Vec<f64>>,
    ) -> RpcResult<FeeHistory> {
        if let Some(p) = &percentiles {
            if p.len() > MAX_REWARD_PERCENTILES {
                return Err(RpcError::InvalidParams(format!(
                    "invalid reward percentile: over the query limit {MAX_REWARD_PERCENTILES}"
                )));
            }
            if p.iter().any(|x| !(0.0..=100.0).contains(x)) || p.windows(2).any(|w| w[0] > w[1]) {
                return Err(RpcError::InvalidParams(
                    "reward percentiles must be ascending values in [0, 100]".into(),
                ));
            }
        }
        let (reader, head) = self.reader()?;
        let newest = self.resolve(&reader, head, BlockId::Number(newest))?;
        let count = count.clamp(0, MAX_FEE_HISTORY_BLOCKS).min(newest + 1);
        let oldest = newest + 1 - count;
        let mut history = FeeHistory {
            oldest_block: oldest,
            ..Default::default()
        };
        let mut rewards = Vec::new();
        for number in oldest..=newest {
            let header = reader
                .header(number)?
                .ok_or_else(|| RpcError::NotFound(format!("block {number}")))?;
            let base_fee = header.base_fee_per_gas.unwrap_or_default();
            history.base_fee_per_gas.push(base_fee as u128);
            history
                .gas_used_ratio
                .push(header.gas_used as f64 / header.gas_limit as f64);
            history.base_fee_per_blob_gas.push(1);
            history.blob_gas_used_ratio.push(0.0);
            if let Some(percentiles) = &percentiles {
                rewards.push(block_rewards(&reader, number, base_fee, percentiles)?);
            }
            if number == newest {
                let next = header
                    .next_block_base_fee(alloy_eips::eip1559::BaseFeeParams::ethereum())
                    .unwrap_or_default();
                history.base_fee_per_gas.push(next as u128);
                history.base_fee_per_blob_gas.push(1);
            }
        }
        history.reward = percentiles.map(|_| rewards);
        Ok(history)
    }

    /// `eth_getLogs`.
    pub fn logs(&self, filter: &Filter) -> RpcResult<Vec<Log>> {
        let (reader, head) = self.reader()?;
        let (from, to) = match filter.block_option {
            FilterBlockOption::AtBlockHash(hash) => {
                let n = reader
                    .block_number(&hash)?
                    .ok_or_else(|| RpcError::NotFound(format!("block {hash} not found")))?;
                (n, n)
            }
            FilterBlockOption::Range {
                from_block,
                to_block,
            } => {
                if let (Some(BlockNumberOrTag::Number(from)), Some(BlockNumberOrTag::Number(to))) =
                    (from_block, to_block)
                    && from > to
                {
                    return Err(RpcError::InvalidParams("invalid block range params".into()));
                }
                let from = resolve_tag(from_block.unwrap_or_default(), head);
                let to = resolve_tag(to_block.unwrap_or_default(), head).min(head);
                (from, to)
            }
        };
        self.logs_in_range(&reader, filter, from, to)
    }

    /// Logs matching `filter` in blocks `from..=to`, bounded by the configured limits.
    pub fn logs_in_range(
        &self,
        reader: &StoreReader,
        filter: &Filter,
        from: u64,
        to: u64,
    ) -> RpcResult<Vec<Log>> {
        if from > to {
            return Ok(Vec::new());
        }
        if to - from >= self.config.max_log_block_range {
            return Err(RpcError::LimitExceeded(format!(
                "query exceeds max block range {}",
                self.config.max_log_block_range
            )));
        }
        let mut out = Vec::new();
        for number in from..=to {
            let Some(header) = reader.header(number)? else {
                break;
            };
            if !filter.matches_bloom(header.logs_bloom) {
                continue;
            }
            for receipt in rpc_receipts(reader, number)?.unwrap_or_default() {
                out.extend(
                    receipt
                        .inner
                        .logs()
                        .iter()
                        .filter(|l| filter.matches(&l.inner))
                        .cloned(),
                );
            }
            if out.len() > self.config.max_logs {
                return Err(RpcError::LimitExceeded(format!(
                    "query returned more than {} results",
                    self.config.max_logs
                )));
            }
        }
        Ok(out)
    }

    /// `eth_getProof`.
    pub fn proof(
        &self,
        address: Address,
        keys: Vec<JsonStorageKey>,
        id: Option<BlockId>,
    ) -> RpcResult<EIP1186AccountProofResponse> {
        if keys.len() > self.config.max_proof_keys {
            return Err(RpcError::LimitExceeded(format!(
                "at most {} storage keys per proof",
                self.config.max_proof_keys
            )));
        }
        self.state_query(id, |state, number| {
            let reader = state.reader();
            let header = reader
                .header(number)?
                .ok_or_else(|| RpcError::NotFound(format!("block {number}")))?;
            let account = state.account(&address)?.unwrap_or_default();
            let trie_error =
                |e: openledger_chain::trie::TrieError| RpcError::Internal(e.to_string());
            let account_proof = proof(reader, header.state_root, keccak256(address).as_slice())
                .map_err(trie_error)?;
            let storage_proof = keys
                .into_iter()
                .map(|key| {
                    let slot: U256 = key.as_b256().into();
                    let nodes = if account.storage_root == EMPTY_ROOT_HASH {
                        Vec::new()
                    } else {
                        proof(
                            reader,
                            account.storage_root,
                            keccak256(key.as_b256()).as_slice(),
                        )
                        .map_err(trie_error)?
                    };
                    Ok(EIP1186StorageProof {
                        key,
                        value: state.storage(&address, &slot)?,
                        proof: nodes.into_iter().map(Bytes::from).collect(),
                    })
                })
                .collect::<RpcResult<Vec<_>>>()?;
            Ok(EIP1186AccountProofResponse {
                address,
                balance: account.balance,
                code_hash: account.code_hash,
                nonce: account.nonce,
                storage_hash: account.storage_root,
                account_proof: account_proof.into_iter().map(Bytes::from).collect(),
                storage_proof,
            })
        })
    }
}

/// The number a tag names, given the head. Pending, safe and finalized are the head: a single
/// producer finalizes each block as it seals it.
pub fn resolve_tag(tag: BlockNumberOrTag, head: u64) -> u64 {
    match tag {
        BlockNumberOrTag::Earliest => 0,
        BlockNumberOrTag::Number(n) => n,
        _ => head,
    }
}

/// The EVM input for an `eth_call`/`eth_estimateGas` request.
pub fn call_env(request: TransactionRequest, gas_cap: u64) -> RpcResult<TxEnv> {
    let data = request
        .input
        .clone()
        .try_into_unique_input()
        .map_err(|e| RpcError::InvalidParams(e.to_string()))?
        .unwrap_or_default();
    let tx_type = if request.authorization_list.is_some() {
        4
    } else if request.max_fee_per_gas.is_some() || request.max_priority_fee_per_gas.is_some() {
        2
    } else if request.access_list.is_some() {
        1
    } else {
        0
    };
    let gas_price = request
        .max_fee_per_gas
        .or(request.gas_price)
        .unwrap_or_default();
    let mut env = TxEnv {
        tx_type,
        caller: request.from.unwrap_or_default(),
        gas_limit: request.gas.unwrap_or(gas_cap).min(gas_cap),
        gas_price,
        kind: request.to.unwrap_or(TxKind::Create),
        value: request.value.unwrap_or_default(),
        data,
        nonce: request.nonce.unwrap_or_default(),
        access_list: request.access_list.unwrap_or_default(),
        gas_priority_fee: if tx_type >= 2 {
            Some(
                request
                    .max_priority_fee_per_gas
                    .unwrap_or_default()
                    .min(gas_price),
            )
        } else {
            None
        },
        ..Default::default()
    };
    if let Some(auths) = request.authorization_list {
        env.set_signed_authorization(auths);
    }
    Ok(env)
}

/// The return data of a call, or the error clients expect for a revert or halt.
pub fn call_output(result: CallResult) -> RpcResult<Bytes> {
    match result {
        ExecutionResult::Success { output, .. } => Ok(output.into_data()),
        ExecutionResult::Revert { output, .. } => Err(RpcError::reverted(output)),
        ExecutionResult::Halt { reason, .. } => Err(RpcError::Rejected(halt_message(&reason))),
    }
}

/// geth's wording for an exceptional halt.
pub fn halt_message(reason: &HaltReason) -> String {
    match reason {
        HaltReason::OutOfGas(_) => "out of gas".into(),
        HaltReason::OpcodeNotFound | HaltReason::InvalidFEOpcode => "invalid opcode".into(),
        HaltReason::StackUnderflow => "stack underflow".into(),
        HaltReason::StackOverflow => "stack limit reached".into(),
        HaltReason::InvalidJump => "invalid jump destination".into(),
        HaltReason::CallTooDeep => "max call depth exceeded".into(),
        HaltReason::OutOfFunds => "insufficient balance for transfer".into(),
        HaltReason::StateChangeDuringStaticCall => "write protection".into(),
        other => format!("execution halted: {other:?}"),
    }
}

/// The tips paid in block `number` at each percentile of gas used.
fn block_rewards(
    reader: &StoreReader,
    number: u64,
    base_fee: u64,
    percentiles: &[f64],
) -> RpcResult<Vec<u128>> {
    let txs = decode_body(&reader.body(number)?.unwrap_or_default())?;
    let receipts = rpc_receipts(reader, number)?.unwrap_or_default();
    let mut tips: Vec<(u128, u64)> = txs
        .iter()
        .zip(&receipts)
        .map(|((tx, _), r): (&(TxEnvelope, Address), _)| {
            (
                tx.effective_tip_per_gas(base_fee).unwrap_or_default(),
                r.gas_used,
            )
        })
        .collect();
    if tips.is_empty() {
        return Ok(vec![0; percentiles.len()]);
    }
    tips.sort_unstable();
    let total: u64 = tips.iter().map(|(_, g)| g).sum();
    Ok(percentiles
        .iter()
        .map(|p| {
            let threshold = (total as f64 * p / 100.0) as u64;
            let mut acc = 0;
            for (tip, gas) in &tips {
                acc += gas;
                if acc >= threshold {
                    return *tip;
                }
            }
            tips.last().map_or(0, |(t, _)| *t)
        })
        .collect())
}
