//! A dev chain's methods, under the names anvil and Hardhat give them, so that Foundry and
//! Hardhat scripts and test suites run unchanged: the clock, mining control, state edits,
//! snapshots, and impersonation with unsigned `eth_sendTransaction`. Only a node started with
//! [`crate::DevRpc`] serves them; elsewhere they answer "method not found".
//!
//! [`DevApi`] declares the namespace once: the server implements [`DevApiServer`], and any
//! jsonrpsee client (the flywheel's chain client too) calls it through [`DevApiClient`].

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use alloy_consensus::SignableTransaction;
use alloy_primitives::{Address, B256, TxKind, U64, U256};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_serde::JsonStorageKey;
use alloy_signer::SignerSync;
use jsonrpsee::{
    MethodResponse,
    core::middleware::{Batch, BatchEntry, BatchEntryErr, Notification, RpcServiceT},
    proc_macros::rpc,
    types::{ErrorObjectOwned, Params, Request},
};
use openledger_chain::{
    clock::{MAX_BLOCK_INTERVAL, Mining},
    state::StateEdit,
};
use serde_json::value::RawValue;

use crate::{
    context::{DevState, RpcContext, Snapshot},
    error::{RpcError, RpcResult},
    eth::DEFAULT_PRIORITY_FEE,
    params::{Args, PrefixedBytes, Quantity},
};

/// Most blocks one `anvil_mine`/`hardhat_mine` seals: each is a durable commit.
pub const MAX_MINE_BLOCKS: u64 = 10_000;

/// anvil's and Hardhat's dev methods. Where the two name a method differently and answer the
/// same, one is an alias of the other; where anvil answers null and Hardhat `true`, each has
/// its own method.
#[rpc(server, client)]
pub trait DevApi {
    /// Moves the clock `seconds` forward; answers the clock's new offset in seconds, so that
    /// time-locked steps (voting periods, unbonding) can be exercised without waiting.
    #[method(name = "evm_increaseTime")]
    fn increase_time(&self, seconds: Quantity) -> RpcResult<i64>;

    /// Sets the timestamp of the next block.
    #[method(name = "evm_setNextBlockTimestamp")]
    fn set_next_block_timestamp(&self, timestamp: Quantity) -> RpcResult<bool>;

    /// Seals a block now, at `timestamp` when given.
    #[method(name = "evm_mine", blocking)]
    fn evm_mine(&self, timestamp: Option<Quantity>) -> RpcResult<U64>;

    /// Seals `blocks` blocks (one when not given), each `interval` seconds after the one
    /// before when given (an interval of 0, what viem sends when none is given, means none).
    #[method(name = "anvil_mine", aliases = ["hardhat_mine"], blocking)]
    fn mine(&self, blocks: Option<Quantity>, interval: Option<Quantity>) -> RpcResult<()>;

    /// Turns sealing on arrival on, or off: blocks are then sealed only when asked, as in
    /// Hardhat; interval mining comes back with `evm_setIntervalMining`.
    #[method(name = "evm_setAutomine")]
    fn set_automine(&self, on: bool) -> RpcResult<bool>;

    /// Whether blocks are sealed on arrival.
    #[method(name = "anvil_getAutomine", aliases = ["hardhat_getAutomine"])]
    fn automine(&self) -> RpcResult<bool>;

    /// Seals a block every `millis` milliseconds; 0 stops interval mining.
    #[method(name = "evm_setIntervalMining")]
    fn set_interval_mining(&self, millis: Quantity) -> RpcResult<bool>;

    /// Seals a block every `seconds` seconds; 0 stops interval mining.
    #[method(name = "anvil_setIntervalMining")]
    fn set_interval_mining_secs(&self, seconds: Quantity) -> RpcResult<()>;

    /// Sets an account's balance, sealed in a block of its own at once.
    #[method(name = "anvil_setBalance", blocking)]
    fn set_balance(&self, account: Address, balance: U256) -> RpcResult<()>;

    /// [`DevApiServer::set_balance`], answering `true`.
    #[method(name = "hardhat_setBalance", blocking)]
    fn hardhat_set_balance(&self, account: Address, balance: U256) -> RpcResult<bool>;

    /// Sets an account's nonce, sealed in a block of its own at once.
    #[method(name = "anvil_setNonce", blocking)]
    fn set_nonce(&self, account: Address, nonce: Quantity) -> RpcResult<()>;

    /// [`DevApiServer::set_nonce`], answering `true`.
    #[method(name = "hardhat_setNonce", blocking)]
    fn hardhat_set_nonce(&self, account: Address, nonce: Quantity) -> RpcResult<bool>;

    /// Sets an account's code, sealed in a block of its own at once.
    #[method(name = "anvil_setCode", blocking)]
    fn set_code(&self, account: Address, code: PrefixedBytes) -> RpcResult<()>;

    /// [`DevApiServer::set_code`], answering `true`.
    #[method(name = "hardhat_setCode", blocking)]
    fn hardhat_set_code(&self, account: Address, code: PrefixedBytes) -> RpcResult<bool>;

    /// Sets one storage slot of an account, sealed in a block of its own at once.
    #[method(name = "anvil_setStorageAt", blocking)]
    fn set_storage_at(
        &self,
        account: Address,
        slot: JsonStorageKey,
        value: JsonStorageKey,
    ) -> RpcResult<()>;

    /// [`DevApiServer::set_storage_at`], answering `true`.
    #[method(name = "hardhat_setStorageAt", blocking)]
    fn hardhat_set_storage_at(
        &self,
        account: Address,
        slot: JsonStorageKey,
        value: JsonStorageKey,
    ) -> RpcResult<bool>;

    /// Remembers the head and the clock; answers the snapshot's id (Hardhat's start at 1).
    #[method(name = "evm_snapshot", aliases = ["anvil_snapshot"])]
    fn snapshot(&self) -> RpcResult<U64>;

    /// Goes back to snapshot `id`: every block sealed since it is dropped, and that snapshot
    /// and every later one with them (Hardhat's rule); the clock goes back too. Answers
    /// whether the snapshot was known.
    #[method(name = "evm_revert", aliases = ["anvil_revert"], blocking)]
    fn revert(&self, id: Quantity) -> RpcResult<bool>;

    /// Lets `eth_sendTransaction` send for `account` without its key.
    #[method(name = "anvil_impersonateAccount")]
    fn impersonate_account(&self, account: Address) -> RpcResult<()>;

    /// [`DevApiServer::impersonate_account`], answering `true`.
    #[method(name = "hardhat_impersonateAccount")]
    fn hardhat_impersonate_account(&self, account: Address) -> RpcResult<bool>;

    /// Stops impersonating `account`.
    #[method(name = "anvil_stopImpersonatingAccount")]
    fn stop_impersonating_account(&self, account: Address) -> RpcResult<()>;

    /// [`DevApiServer::stop_impersonating_account`], answering `true`.
    #[method(name = "hardhat_stopImpersonatingAccount")]
    fn hardhat_stop_impersonating_account(&self, account: Address) -> RpcResult<bool>;
}

/// How many parameters each dev method takes. [`Strict`] refuses a request with more, or with
/// parameters that are not an array, as geth and anvil refuse them (the `#[rpc]` macro's reader
/// would ignore the rest); a test checks that every method of [`DevApi`] is listed.
pub const ARITY: &[(&str, usize)] = &[
    ("evm_increaseTime", 1),
    ("evm_setNextBlockTimestamp", 1),
    ("evm_mine", 1),
    ("anvil_mine", 2),
    ("hardhat_mine", 2),
    ("evm_setAutomine", 1),
    ("anvil_getAutomine", 0),
    ("hardhat_getAutomine", 0),
    ("evm_setIntervalMining", 1),
    ("anvil_setIntervalMining", 1),
    ("anvil_setBalance", 2),
    ("hardhat_setBalance", 2),
    ("anvil_setNonce", 2),
    ("hardhat_setNonce", 2),
    ("anvil_setCode", 2),
    ("hardhat_setCode", 2),
    ("anvil_setStorageAt", 3),
    ("hardhat_setStorageAt", 3),
    ("evm_snapshot", 0),
    ("anvil_snapshot", 0),
    ("evm_revert", 1),
    ("anvil_revert", 1),
    ("anvil_impersonateAccount", 1),
    ("hardhat_impersonateAccount", 1),
    ("anvil_stopImpersonatingAccount", 1),
    ("hardhat_stopImpersonatingAccount", 1),
];

/// Why a dev method's request is refused before it runs, if it is.
fn refusal(method: &str, params: Option<&RawValue>) -> Option<ErrorObjectOwned> {
    let (_, max) = ARITY.iter().find(|(name, _)| *name == method)?;
    let params = Params::new(params.map(RawValue::get));
    Args::new(&params, *max).err().map(Into::into)
}

/// The RPC middleware that applies [`ARITY`].
#[derive(Debug, Clone)]
pub struct Strict<S> {
    /// The service guarded.
    pub inner: S,
}

impl<S> RpcServiceT for Strict<S>
where
    S: RpcServiceT<MethodResponse = MethodResponse> + Clone + Send + Sync + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let refused = refusal(request.method_name(), request.params.as_deref());
        let inner = self.inner.clone();
        async move {
            match refused {
                Some(e) => MethodResponse::error(request.id, e),
                None => inner.call(request).await,
            }
        }
    }

    fn batch<'a>(
        &self,
        mut requests: Batch<'a>,
    ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        for entry in requests.iter_mut() {
            if let Ok(BatchEntry::Call(request)) = entry
                && let Some(e) = refusal(request.method_name(), request.params.as_deref())
            {
                *entry = Err(BatchEntryErr::new(request.id.clone(), e));
            }
        }
        self.inner.batch(requests)
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

/// The dev methods over the server's context.
pub(crate) struct Dev(pub(crate) Arc<RpcContext>);

impl Dev {
    fn edit(&self, edit: StateEdit) -> RpcResult<()> {
        self.0.api.chain().edit_state(&[edit])?;
        Ok(())
    }

    fn set_next_timestamp(&self, timestamp: u64) -> RpcResult<()> {
        let chain = self.0.api.chain();
        Ok(chain
            .clock()
            .set_next(timestamp, chain.head().header.timestamp)?)
    }

    /// Seals a block every `interval`; zero stops interval mining (blocks then only when asked).
    fn set_interval(&self, interval: Duration) -> RpcResult<()> {
        if interval > MAX_BLOCK_INTERVAL {
            return Err(RpcError::InvalidParams(format!(
                "an interval of {interval:?} is over a year: stop interval mining with 0 instead"
            )));
        }
        let mining = if interval.is_zero() {
            Mining::Manual
        } else {
            Mining::Every(interval)
        };
        self.0.api.chain().set_mining(mining);
        Ok(())
    }

    /// Starts (or stops) sending for `account` without its key.
    fn impersonate(&self, account: Address, on: bool) -> RpcResult<()> {
        let mut impersonated = dev_state(&self.0)?.impersonated.lock();
        if on {
            impersonated.insert(account);
        } else {
            impersonated.remove(&account);
        }
        Ok(())
    }
}

impl DevApiServer for Dev {
    fn increase_time(&self, seconds: Quantity) -> RpcResult<i64> {
        Ok(self.0.api.chain().clock().advance(seconds.get())?)
    }

    fn set_next_block_timestamp(&self, timestamp: Quantity) -> RpcResult<bool> {
        self.set_next_timestamp(timestamp.get())?;
        Ok(true)
    }

    fn evm_mine(&self, timestamp: Option<Quantity>) -> RpcResult<U64> {
        if let Some(timestamp) = timestamp {
            self.set_next_timestamp(timestamp.get())?;
        }
        let chain = self.0.api.chain();
        chain.produce_block(chain.now())?;
        Ok(U64::ZERO)
    }

    fn mine(&self, blocks: Option<Quantity>, interval: Option<Quantity>) -> RpcResult<()> {
        let blocks = blocks.map_or(1, Quantity::get);
        let interval = interval.map(Quantity::get).filter(|i| *i > 0);
        if blocks > MAX_MINE_BLOCKS {
            return Err(RpcError::LimitExceeded(format!(
                "at most {MAX_MINE_BLOCKS} blocks a call, not {blocks}"
            )));
        }
        let chain = self.0.api.chain();
        for _ in 0..blocks {
            if let Some(interval) = interval {
                let head = chain.head().header.timestamp;
                self.set_next_timestamp(head.saturating_add(interval))?;
            }
            chain.produce_block(chain.now())?;
        }
        Ok(())
    }

    fn set_automine(&self, on: bool) -> RpcResult<bool> {
        let mining = if on {
            Mining::OnArrival
        } else {
            Mining::Manual
        };
        self.0.api.chain().set_mining(mining);
        Ok(true)
    }

    fn automine(&self) -> RpcResult<bool> {
        Ok(self.0.api.chain().mining() == Mining::OnArrival)
    }

    fn set_interval_mining(&self, millis: Quantity) -> RpcResult<bool> {
        self.set_interval(Duration::from_millis(millis.get()))?;
        Ok(true)
    }

    fn set_interval_mining_secs(&self, seconds: Quantity) -> RpcResult<()> {
        self.set_interval(Duration::from_secs(seconds.get()))
    }

    fn set_balance(&self, account: Address, balance: U256) -> RpcResult<()> {
        self.edit(StateEdit::Balance(account, balance))
    }

    fn hardhat_set_balance(&self, account: Address, balance: U256) -> RpcResult<bool> {
        self.set_balance(account, balance).map(|()| true)
    }

    fn set_nonce(&self, account: Address, nonce: Quantity) -> RpcResult<()> {
        self.edit(StateEdit::Nonce(account, nonce.get()))
    }

    fn hardhat_set_nonce(&self, account: Address, nonce: Quantity) -> RpcResult<bool> {
        self.set_nonce(account, nonce).map(|()| true)
    }

    fn set_code(&self, account: Address, code: PrefixedBytes) -> RpcResult<()> {
        self.edit(StateEdit::Code(account, code.0))
    }

    fn hardhat_set_code(&self, account: Address, code: PrefixedBytes) -> RpcResult<bool> {
        self.set_code(account, code).map(|()| true)
    }

    fn set_storage_at(
        &self,
        account: Address,
        slot: JsonStorageKey,
        value: JsonStorageKey,
    ) -> RpcResult<()> {
        self.edit(StateEdit::Storage(
            account,
            slot.as_b256().into(),
            value.as_b256().into(),
        ))
    }

    fn hardhat_set_storage_at(
        &self,
        account: Address,
        slot: JsonStorageKey,
        value: JsonStorageKey,
    ) -> RpcResult<bool> {
        self.set_storage_at(account, slot, value).map(|()| true)
    }

    fn snapshot(&self) -> RpcResult<U64> {
        let dev = dev_state(&self.0)?;
        let chain = self.0.api.chain();
        let snapshot = Snapshot {
            id: dev.next_snapshot.fetch_add(1, Ordering::Relaxed) + 1,
            head: chain.head().header.number,
            clock_offset: chain.clock().offset(),
        };
        dev.snapshots.lock().push(snapshot);
        Ok(U64::from(snapshot.id))
    }

    fn revert(&self, id: Quantity) -> RpcResult<bool> {
        let dev = dev_state(&self.0)?;
        let mut snapshots = dev.snapshots.lock();
        let Some(at) = snapshots.iter().position(|s| s.id == id.get()) else {
            return Ok(false);
        };
        let snapshot = snapshots[at];
        snapshots.truncate(at);
        let chain = self.0.api.chain();
        chain.revert_to(snapshot.head)?;
        chain.clock().reset(snapshot.clock_offset);
        Ok(true)
    }

    fn impersonate_account(&self, account: Address) -> RpcResult<()> {
        self.impersonate(account, true)
    }

    fn hardhat_impersonate_account(&self, account: Address) -> RpcResult<bool> {
        self.impersonate(account, true).map(|()| true)
    }

    fn stop_impersonating_account(&self, account: Address) -> RpcResult<()> {
        self.impersonate(account, false)
    }

    fn hardhat_stop_impersonating_account(&self, account: Address) -> RpcResult<bool> {
        self.impersonate(account, false).map(|()| true)
    }
}

fn dev_state(c: &RpcContext) -> RpcResult<&DevState> {
    c.dev
        .as_ref()
        .ok_or_else(|| RpcError::Internal("dev methods without dev state".into()))
}

/// `eth_sendTransaction`: fills in what the request leaves out (nonce, gas, fees, chain id),
/// then signs with the dev key of `from`, or sends unsigned for an impersonated `from`.
pub(crate) fn send_transaction(c: &RpcContext, request: TransactionRequest) -> RpcResult<B256> {
    let from = request.from.ok_or_else(|| {
        RpcError::InvalidParams("eth_sendTransaction needs a `from` address".into())
    })?;
    let signer = c
        .api
        .config()
        .dev
        .as_ref()
        .and_then(|dev| dev.signers.iter().find(|s| s.address() == from));
    let impersonated = c
        .dev
        .as_ref()
        .is_some_and(|dev| dev.impersonated.lock().contains(&from));
    if signer.is_none() && !impersonated {
        return Err(RpcError::Rejected(format!(
            "unknown account {from}: the node holds no key for it and it is not impersonated"
        )));
    }
    let tx = fill(c, request, from)?;
    let chain = c.api.chain();
    match signer {
        Some(signer) => {
            let signature = signer
                .sign_hash_sync(&tx.signature_hash())
                .map_err(|e| RpcError::Internal(format!("signing: {e}")))?;
            let raw =
                alloy_eips::eip2718::Encodable2718::encoded_2718(&tx.into_envelope(signature));
            Ok(chain.submit_raw(&raw)?)
        }
        None => Ok(chain.submit_as(tx, from)?),
    }
}

/// Completes a request into a transaction the way wallets do: the pending nonce, estimated gas,
/// and EIP-1559 fees of twice the next base fee plus the suggested tip when none are given.
fn fill(
    c: &RpcContext,
    mut request: TransactionRequest,
    from: Address,
) -> RpcResult<alloy_consensus::TypedTransaction> {
    if request.gas_price.is_some()
        && (request.max_fee_per_gas.is_some() || request.max_priority_fee_per_gas.is_some())
    {
        return Err(RpcError::InvalidParams(
            "both gasPrice and (maxFeePerGas or maxPriorityFeePerGas) specified".into(),
        ));
    }
    let chain = c.api.chain();
    request.chain_id.get_or_insert(chain.chain_id());
    request.to.get_or_insert(TxKind::Create);
    if request.nonce.is_none() {
        request.nonce = Some(chain.pending_nonce(&from)?);
    }
    if request.gas_price.is_none() {
        let tip = request
            .max_priority_fee_per_gas
            .unwrap_or(DEFAULT_PRIORITY_FEE);
        let cap = request
            .max_fee_per_gas
            .unwrap_or(2 * chain.next_base_fee() as u128 + tip);
        request.max_priority_fee_per_gas = Some(tip.min(cap));
        request.max_fee_per_gas = Some(cap);
    }
    if request.gas.is_none() {
        request.gas = Some(c.api.estimate_gas(request.clone(), None)?);
    }
    if let Err((kind, missing)) = request.missing_keys() {
        return Err(RpcError::InvalidParams(format!(
            "cannot build a {kind} transaction without {}",
            missing.join(", ")
        )));
    }
    request
        .build_typed_tx()
        .map_err(|_| RpcError::InvalidParams("incomplete transaction".into()))
}
