//! `debug_trace*` (geth's tracers) and `trace_transaction`/`trace_block` (parity's flat call
//! traces, which Otterscan-style explorers and Hardhat read), over the chain's replays.

use alloy_eips::BlockId;
use alloy_primitives::B256;
use alloy_rpc_types_eth::TransactionRequest;
use alloy_rpc_types_trace::{
    common::TraceResult,
    geth::{
        GethDebugBuiltInTracerType, GethDebugTracingCallOptions, GethDebugTracingOptions, GethTrace,
    },
    parity::LocalizedTransactionTrace,
};
use openledger_chain::trace::TraceError;

use crate::{
    error::{RpcError, RpcResult},
    eth::{EthApi, call_env},
};

impl From<TraceError> for RpcError {
    fn from(e: TraceError) -> Self {
        match e {
            TraceError::NotFound(_) => RpcError::NotFound(e.to_string()),
            TraceError::Tracer(_) => RpcError::InvalidParams(e.to_string()),
            TraceError::Invalid(_) => RpcError::Rejected(e.to_string()),
            TraceError::TooLong => RpcError::LimitExceeded(e.to_string()),
            TraceError::Chain(e) => e.into(),
        }
    }
}

/// A block's traces in the order of its transactions, each with its hash.
pub type BlockTraces = Vec<TraceResult<GethTrace, String>>;

impl EthApi {
    /// `debug_traceTransaction`.
    pub fn trace_transaction(
        &self,
        hash: B256,
        opts: GethDebugTracingOptions,
    ) -> RpcResult<GethTrace> {
        let (number, index) = self
            .chain()
            .reader()?
            .tx_location(&hash)?
            .ok_or_else(|| RpcError::NotFound(format!("transaction {hash} not found")))?;
        let traced = self
            .chain()
            .trace_block(number, Some(index as usize), &opts)?;
        traced
            .into_iter()
            .next()
            .map(|t| t.trace)
            .ok_or_else(|| RpcError::Internal(format!("transaction {hash} missing from its block")))
    }

    /// `debug_traceBlockByNumber` and `debug_traceBlockByHash`.
    pub fn trace_block(
        &self,
        id: BlockId,
        opts: GethDebugTracingOptions,
    ) -> RpcResult<BlockTraces> {
        let number = self.resolve_id(id)?;
        let traced = self.chain().trace_block(number, None, &opts)?;
        Ok(traced
            .into_iter()
            .map(|t| TraceResult::Success {
                result: t.trace,
                tx_hash: Some(t.hash),
            })
            .collect())
    }

    /// `debug_traceCall`.
    pub fn trace_call(
        &self,
        request: TransactionRequest,
        id: Option<BlockId>,
        opts: GethDebugTracingCallOptions,
    ) -> RpcResult<GethTrace> {
        if opts.state_overrides.is_some() || opts.block_overrides.is_some() {
            return Err(RpcError::InvalidParams(
                "state and block overrides are not supported".into(),
            ));
        }
        if opts.tx_index.is_some() {
            return Err(RpcError::InvalidParams("txIndex is not supported".into()));
        }
        let number = self.resolve_id(id.unwrap_or_default())?;
        let env = call_env(request, self.call_gas_cap(number)?)?;
        Ok(self
            .chain()
            .trace_call(env, number, &opts.tracing_options)?)
    }

    /// `trace_transaction`: the transaction's calls, flattened.
    pub fn parity_trace_transaction(
        &self,
        hash: B256,
    ) -> RpcResult<Vec<LocalizedTransactionTrace>> {
        flat(self.trace_transaction(hash, flat_call_tracer())?)
    }

    /// `trace_block`: every call of every transaction of the block, flattened.
    pub fn parity_trace_block(&self, id: BlockId) -> RpcResult<Vec<LocalizedTransactionTrace>> {
        let number = self.resolve_id(id)?;
        let traced = self
            .chain()
            .trace_block(number, None, &flat_call_tracer())?;
        let mut all = Vec::new();
        for t in traced {
            all.extend(flat(t.trace)?);
        }
        Ok(all)
    }
}

fn flat_call_tracer() -> GethDebugTracingOptions {
    GethDebugTracingOptions::new_tracer(GethDebugBuiltInTracerType::FlatCallTracer)
}

fn flat(trace: GethTrace) -> RpcResult<Vec<LocalizedTransactionTrace>> {
    match trace {
        GethTrace::FlatCallTracer(calls) => Ok(calls),
        other => Err(RpcError::Internal(format!(
            "the flat call tracer answered {other:?}"
        ))),
    }
}
