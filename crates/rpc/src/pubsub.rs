//! `eth_subscribe` over WebSocket: `newHeads`, `logs` and `newPendingTransactions`.

use std::sync::Arc;

use alloy_rpc_types_eth::{Filter, Log};
use jsonrpsee::{
    PendingSubscriptionSink, SubscriptionSink,
    core::SubscriptionResult,
    types::{ErrorObjectOwned, Params},
};
use openledger_chain::{BlockInfo, ChainEvent};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    context::RpcContext,
    convert::{TxLocation, rpc_header, rpc_log, rpc_transaction},
    error::RpcError,
    params::Args,
};

enum Topic {
    NewHeads,
    Logs(Box<Filter>),
    PendingTransactions { full: bool },
}

fn parse(params: &Params<'_>) -> Result<Topic, ErrorObjectOwned> {
    let mut args = Args::new(params, 2)?;
    let name: String = args.required()?;
    let topic = match name.as_str() {
        "newHeads" => Topic::NewHeads,
        "logs" => Topic::Logs(Box::new(args.optional::<Filter>()?.unwrap_or_default())),
        "newPendingTransactions" => Topic::PendingTransactions {
            full: args.optional::<bool>()?.unwrap_or(false),
        },
        other => {
            return Err(
                RpcError::InvalidParams(format!("unsupported subscription: {other}")).into(),
            );
        }
    };
    if matches!(topic, Topic::NewHeads) && args.optional::<serde_json::Value>()?.is_some() {
        return Err(RpcError::InvalidParams("too many arguments, want at most 1".into()).into());
    }
    Ok(topic)
}

/// Serves one `eth_subscribe` until the client unsubscribes or disconnects.
pub async fn subscribe(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    ctx: Arc<RpcContext>,
) -> SubscriptionResult {
    let topic = match parse(&params) {
        Ok(topic) => topic,
        Err(e) => {
            pending.reject(e).await;
            return Ok(());
        }
    };
    let mut events = ctx.api.chain().subscribe();
    let sink = pending.accept().await?;
    loop {
        let event = tokio::select! {
            _ = sink.closed() => return Ok(()),
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "subscriber lagging; events skipped");
                continue;
            }
            Err(RecvError::Closed) => return Ok(()),
        };
        match (&topic, event) {
            (Topic::NewHeads, ChainEvent::Block(block)) => {
                send(
                    &sink,
                    &rpc_header(block.header.header.clone(), block.header.hash),
                )
                .await?;
            }
            (Topic::Logs(filter), ChainEvent::Block(block)) => {
                for log in block_logs(&block)
                    .into_iter()
                    .filter(|l| filter.matches(&l.inner))
                {
                    send(&sink, &log).await?;
                }
            }
            (Topic::PendingTransactions { full }, ChainEvent::PendingTransaction(hash)) => {
                if !full {
                    send(&sink, &hash).await?;
                } else if let Some(pooled) = ctx.api.chain().pooled(&hash) {
                    send(
                        &sink,
                        &rpc_transaction((*pooled.tx).clone(), pooled.sender, None),
                    )
                    .await?;
                }
            }
            _ => {}
        }
    }
}

async fn send(sink: &SubscriptionSink, value: &impl Serialize) -> SubscriptionResult {
    let raw = serde_json::value::to_raw_value(value)?;
    sink.send(raw).await?;
    Ok(())
}

/// Subscription ids in the form Ethereum clients expect: `0x` and 32 hex digits (geth's form;
/// web3.py rejects numeric ids). Unique per server: a counter mixed with the server's start time.
#[derive(Debug)]
pub struct HexIdProvider {
    seed: [u8; 16],
    counter: std::sync::atomic::AtomicU64,
}

impl Default for HexIdProvider {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            seed: nanos.to_be_bytes(),
            counter: Default::default(),
        }
    }
}

impl jsonrpsee::core::traits::IdProvider for HexIdProvider {
    fn next_id(&self) -> jsonrpsee::types::SubscriptionId<'static> {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hash = alloy_primitives::keccak256([self.seed.as_slice(), &n.to_be_bytes()].concat());
        format!("0x{}", alloy_primitives::hex::encode(&hash[..16])).into()
    }
}

/// The logs of a freshly committed block.
pub fn block_logs(block: &BlockInfo) -> Vec<Log> {
    let header = &block.header;
    let mut out = Vec::new();
    for (index, ((tx_hash, _, _), receipt)) in
        block.transactions.iter().zip(&block.receipts).enumerate()
    {
        let at = TxLocation::new(&header.header, header.hash, index as u64);
        for log in receipt.logs() {
            let log_index = out.len() as u64;
            out.push(rpc_log(log.clone(), at, *tx_hash, log_index));
        }
    }
    out
}
