//! A dev chain's methods, under the names anvil and Hardhat give them, so that Foundry and
//! Hardhat scripts and test suites run unchanged: the clock, mining control, state edits,
//! snapshots, and impersonation with unsigned `eth_sendTransaction`. Only a node started with
//! [`crate::DevRpc`] registers them; elsewhere they answer "method not found".

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use alloy_consensus::SignableTransaction;
use alloy_primitives::{Address, B256, TxKind, U64};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_serde::JsonStorageKey;
use alloy_signer::SignerSync;
use jsonrpsee::{RpcModule, types::Params};
use openledger_chain::{
    clock::{MAX_BLOCK_INTERVAL, Mining},
    state::StateEdit,
};

use crate::{
    context::{DevState, Quantity, RpcContext, Snapshot, heavy, quick},
    error::{RpcError, RpcResult},
    eth::DEFAULT_PRIORITY_FEE,
    params::{Args, PrefixedBytes},
};

/// Most blocks one `anvil_mine`/`hardhat_mine` seals: each is a durable commit.
pub const MAX_MINE_BLOCKS: u64 = 10_000;

/// Registers every dev method on `m`.
pub(crate) fn register(m: &mut RpcModule<RpcContext>) {
    register_clock(m);
    register_mining(m);
    register_edits(m);
    register_snapshots(m);
    register_impersonation(m);
}

/// Hardhat's and anvil's clock controls, so that a dev chain's time-locked steps (voting
/// periods, unbonding) can be exercised without waiting.
fn register_clock(m: &mut RpcModule<RpcContext>) {
    quick(m, "evm_increaseTime", 1, |c, p| {
        let seconds: Quantity = p.required()?;
        Ok(c.api.chain().clock().advance(seconds.get())?)
    });
    quick(m, "evm_setNextBlockTimestamp", 1, |c, p| {
        let timestamp: Quantity = p.required()?;
        set_next_timestamp(c, timestamp.get())?;
        Ok(true)
    });
}

/// `evm_mine`, `anvil_mine`/`hardhat_mine`, and the switches between sealing on arrival, on an
/// interval and only when asked.
fn register_mining(m: &mut RpcModule<RpcContext>) {
    heavy(m, "evm_mine", 1, |c, p| {
        let timestamp: Option<Quantity> = p.optional()?;
        if let Some(timestamp) = timestamp {
            set_next_timestamp(c, timestamp.get())?;
        }
        let chain = c.api.chain();
        chain.produce_block(chain.now())?;
        Ok("0x0")
    });
    for name in ["anvil_mine", "hardhat_mine"] {
        heavy(m, name, 2, |c, p| {
            let blocks = p.optional::<Quantity>()?.map_or(1, Quantity::get);
            // An interval of 0 (what viem sends when none is given) means none.
            let interval = p
                .optional::<Quantity>()?
                .map(Quantity::get)
                .filter(|i| *i > 0);
            mine(c, blocks, interval)?;
            Ok(serde_json::Value::Null)
        });
    }
    // Off means blocks are sealed only when asked, as in Hardhat; interval mining comes back
    // with `evm_setIntervalMining`.
    quick(m, "evm_setAutomine", 1, |c, p| {
        let on: bool = p.required()?;
        let mining = if on {
            Mining::OnArrival
        } else {
            Mining::Manual
        };
        c.api.chain().set_mining(mining);
        Ok(true)
    });
    for name in ["anvil_getAutomine", "hardhat_getAutomine"] {
        quick(m, name, 0, |c, _| {
            Ok(c.api.chain().mining() == Mining::OnArrival)
        });
    }
    quick(m, "evm_setIntervalMining", 1, |c, p| {
        let millis = p.required::<Quantity>()?.get();
        set_interval(c, Duration::from_millis(millis))?;
        Ok(true)
    });
    quick(m, "anvil_setIntervalMining", 1, |c, p| {
        let seconds = p.required::<Quantity>()?.get();
        set_interval(c, Duration::from_secs(seconds))?;
        Ok(serde_json::Value::Null)
    });
}

/// Seals a block every `interval`; zero stops interval mining (blocks then only when asked).
fn set_interval(c: &RpcContext, interval: Duration) -> RpcResult<()> {
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
    c.api.chain().set_mining(mining);
    Ok(())
}

/// Seals `blocks` blocks, each `interval` seconds after the one before when given.
fn mine(c: &RpcContext, blocks: u64, interval: Option<u64>) -> RpcResult<()> {
    if blocks > MAX_MINE_BLOCKS {
        return Err(RpcError::LimitExceeded(format!(
            "at most {MAX_MINE_BLOCKS} blocks a call, not {blocks}"
        )));
    }
    let chain = c.api.chain();
    for _ in 0..blocks {
        if let Some(interval) = interval {
            let head = chain.head().header.timestamp;
            set_next_timestamp(c, head.saturating_add(interval))?;
        }
        chain.produce_block(chain.now())?;
    }
    Ok(())
}

fn set_next_timestamp(c: &RpcContext, timestamp: u64) -> RpcResult<()> {
    let chain = c.api.chain();
    Ok(chain
        .clock()
        .set_next(timestamp, chain.head().header.timestamp)?)
}

/// Reads a dev edit from a method's parameters.
type EditParser = fn(&mut Args<'_>) -> RpcResult<StateEdit>;

/// Registers a state edit under its anvil name (which answers null) and its Hardhat name (which
/// answers true); the edit is sealed in a block of its own at once.
fn register_edit(
    m: &mut RpcModule<RpcContext>,
    [anvil, hardhat]: [&'static str; 2],
    max: usize,
    parse: EditParser,
) {
    for (name, answer) in [(anvil, serde_json::Value::Null), (hardhat, true.into())] {
        m.register_blocking_method(name, move |params: Params<'_>, ctx: Arc<RpcContext>, _| {
            let edit = parse(&mut Args::new(&params, max)?)?;
            ctx.api.chain().edit_state(&[edit])?;
            RpcResult::Ok(answer.clone())
        })
        .expect("method names are unique");
    }
}

/// anvil's and Hardhat's state edits, for tests that set up state directly.
fn register_edits(m: &mut RpcModule<RpcContext>) {
    register_edit(m, ["anvil_setBalance", "hardhat_setBalance"], 2, |p| {
        Ok(StateEdit::Balance(p.required()?, p.required()?))
    });
    register_edit(m, ["anvil_setNonce", "hardhat_setNonce"], 2, |p| {
        let address = p.required()?;
        Ok(StateEdit::Nonce(address, p.required::<Quantity>()?.get()))
    });
    register_edit(m, ["anvil_setCode", "hardhat_setCode"], 2, |p| {
        Ok(StateEdit::Code(
            p.required()?,
            p.required::<PrefixedBytes>()?.0,
        ))
    });
    register_edit(m, ["anvil_setStorageAt", "hardhat_setStorageAt"], 3, |p| {
        let address = p.required()?;
        let slot: JsonStorageKey = p.required()?;
        let value: JsonStorageKey = p.required()?;
        Ok(StateEdit::Storage(
            address,
            slot.as_b256().into(),
            value.as_b256().into(),
        ))
    });
}

/// `evm_snapshot` and `evm_revert`: a revert drops every block sealed since the snapshot, and
/// that snapshot and every later one with them (Hardhat's rule); the clock goes back too.
fn register_snapshots(m: &mut RpcModule<RpcContext>) {
    for name in ["evm_snapshot", "anvil_snapshot"] {
        quick(m, name, 0, |c, _| {
            let dev = dev_state(c)?;
            let chain = c.api.chain();
            let snapshot = Snapshot {
                id: dev.next_snapshot.fetch_add(1, Ordering::Relaxed) + 1,
                head: chain.head().header.number,
                clock_offset: chain.clock().offset(),
            };
            dev.snapshots.lock().push(snapshot);
            Ok(U64::from(snapshot.id))
        });
    }
    for name in ["evm_revert", "anvil_revert"] {
        heavy(m, name, 1, |c, p| {
            let id = p.required::<Quantity>()?.get();
            let dev = dev_state(c)?;
            let mut snapshots = dev.snapshots.lock();
            let Some(at) = snapshots.iter().position(|s| s.id == id) else {
                return Ok(false);
            };
            let snapshot = snapshots[at];
            snapshots.truncate(at);
            let chain = c.api.chain();
            chain.revert_to(snapshot.head)?;
            chain.clock().reset(snapshot.clock_offset);
            Ok(true)
        });
    }
}

/// `anvil_impersonateAccount`/`hardhat_impersonateAccount` and their stops; anvil's names
/// answer null, Hardhat's true.
fn register_impersonation(m: &mut RpcModule<RpcContext>) {
    let pairs = [
        (
            "anvil_impersonateAccount",
            "hardhat_impersonateAccount",
            true,
        ),
        (
            "anvil_stopImpersonatingAccount",
            "hardhat_stopImpersonatingAccount",
            false,
        ),
    ];
    for (anvil, hardhat, on) in pairs {
        for (name, answer) in [(anvil, serde_json::Value::Null), (hardhat, true.into())] {
            m.register_method(name, move |params: Params<'_>, ctx: &RpcContext, _| {
                impersonate(ctx, &mut Args::new(&params, 1)?, on)?;
                RpcResult::Ok(answer.clone())
            })
            .expect("method names are unique");
        }
    }
}

/// Starts (or stops) sending for the account the parameters name without its key.
fn impersonate(c: &RpcContext, p: &mut Args<'_>, on: bool) -> RpcResult<()> {
    let address: Address = p.required()?;
    let mut impersonated = dev_state(c)?.impersonated.lock();
    if on {
        impersonated.insert(address);
    } else {
        impersonated.remove(&address);
    }
    Ok(())
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
