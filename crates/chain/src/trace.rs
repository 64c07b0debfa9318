//! Traces: a past block's transactions replayed from its parent's state, or a call, run under
//! revm-inspectors' geth-compatible tracers (the struct logger, `callTracer`, `prestateTracer`,
//! `flatCallTracer` and the rest), which `debug_trace*` and `trace_*` answer with.
//!
//! A replay runs the block's transactions exactly as the producer did (same rules, same fee
//! routing), so a trace shows what happened in the block, not what would happen now.

use alloy_consensus::TxEnvelope;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, Log, U256};
pub use alloy_rpc_types_trace::geth::{GethDebugTracingOptions, GethTrace};
use revm::{
    InspectEvm, Inspector,
    context::{BlockEnv, TxEnv},
    context_interface::{
        ContextTr, context::ContextError, result::EVMError, result::ResultAndState,
    },
    handler::FrameResult,
    inspector::JournalExt,
    interpreter::{CallInputs, CallOutcome, CreateInputs, CreateOutcome, FrameInput, Interpreter},
};
use revm_inspectors::tracing::{DebugInspector, DebugInspectorError, TransactionContext};

use crate::{
    chain::{Chain, ChainError, block_env, invalid_message, params_of},
    evm::{BlockExecutor, TxRejected, build_evm_with},
    state::{Overlay, StateAt, StateReader},
};

/// Most opcode steps the struct logger records in one request: each step keeps a copy of the
/// stack, so a transaction that loops through its whole gas limit would otherwise build a log
/// of gigabytes before the response limit could refuse it.
pub const MAX_STRUCT_LOG_STEPS: u64 = 200_000;

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// No such block or transaction.
    #[error("{0} not found")]
    NotFound(String),
    /// The tracer's name or configuration is not one the node knows.
    #[error("{0}")]
    Tracer(String),
    /// The call itself is invalid (for a traced call: nonce, funds, gas).
    #[error("{0}")]
    Invalid(String),
    /// The struct log would exceed [`MAX_STRUCT_LOG_STEPS`].
    #[error(
        "the struct log would record more than {MAX_STRUCT_LOG_STEPS} opcode steps: trace \
         with the callTracer, or disable the struct logger's stack (disableStack) and trace a \
         single transaction"
    )]
    TooLong,
    /// The chain failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl From<crate::store::StoreError> for TraceError {
    fn from(e: crate::store::StoreError) -> Self {
        TraceError::Chain(e.into())
    }
}

/// One traced transaction of a block.
#[derive(Debug, Clone)]
pub struct TxTrace {
    /// The transaction's hash.
    pub hash: B256,
    /// What the tracer made of it.
    pub trace: GethTrace,
}

impl Chain {
    /// Traces the transactions of block `number` under `opts`, or only the one at index `only`
    /// (the ones before it run untraced, so it sees the state they left).
    pub fn trace_block(
        &self,
        number: u64,
        only: Option<usize>,
        opts: &GethDebugTracingOptions,
    ) -> Result<Vec<TxTrace>, TraceError> {
        let reader = self.reader()?;
        let not_found = || TraceError::NotFound(format!("block {number}"));
        let header = reader.header(number)?.ok_or_else(not_found)?;
        let body = reader.body(number)?.ok_or_else(not_found)?;
        let Some(parent) = number.checked_sub(1) else {
            return Ok(Vec::new());
        };
        let block_hash = header.hash_slow();
        let state = Overlay::new(StateAt::new(&reader, parent, self.head().header.number));
        let mut executor = BlockExecutor::with_inspector(
            state,
            self.cfg().clone(),
            block_env(&params_of(&header)),
            self.modules(),
            self.fees(),
            Bounded::new(opts.clone())?,
        );
        let mut traces = Vec::new();
        for (index, (raw, sender)) in body.transactions.iter().zip(&body.senders).enumerate() {
            if only.is_some_and(|only| index > only) {
                break;
            }
            let tx = TxEnvelope::decode_2718(&mut raw.as_ref())
                .map_err(ChainError::StoredTransaction)?;
            if only.is_some_and(|only| index < only) {
                executor.execute(&tx, *sender).map_err(replay_failed)?;
                continue;
            }
            let context = TransactionContext {
                block_hash: Some(block_hash),
                tx_index: Some(index),
                tx_hash: Some(*tx.tx_hash()),
            };
            let traced = executor.inspect(&tx, *sender, |tracer, env, block, out, db| {
                tracer.result(Some(context), env, block, out, db)
            });
            let trace = match traced {
                Ok((_, trace)) => trace?,
                Err(_) if executor.inspector().exceeded => return Err(TraceError::TooLong),
                Err(e) => return Err(replay_failed(e)),
            };
            traces.push(TxTrace {
                hash: *tx.tx_hash(),
                trace,
            });
        }
        Ok(traces)
    }

    /// Traces a call against the state after block `number`, run as `eth_call` runs it.
    pub fn trace_call(
        &self,
        mut tx: TxEnv,
        number: u64,
        opts: &GethDebugTracingOptions,
    ) -> Result<GethTrace, TraceError> {
        let reader = self.reader()?;
        let header = reader
            .header(number)?
            .ok_or_else(|| TraceError::NotFound(format!("block {number}")))?;
        let cfg = self.call_cfg(&mut tx);
        let state = Overlay::new(StateAt::new(&reader, number, self.head().header.number));
        let tracer = Bounded::new(opts.clone())?;
        let mut evm = build_evm_with(
            state,
            cfg,
            block_env(&params_of(&header)),
            self.modules(),
            tracer,
        );
        match evm.inspect_tx(tx.clone()) {
            Ok(out) => evm.inspector.result(
                None,
                &tx,
                &evm.ctx.block,
                &out,
                &mut evm.ctx.journaled_state.database,
            ),
            Err(_) if evm.inspector.exceeded => Err(TraceError::TooLong),
            Err(EVMError::Transaction(e)) => Err(TraceError::Invalid(invalid_message(&e))),
            Err(e) => Err(ChainError::Execution(e).into()),
        }
    }
}

/// A stored block's transaction failed to run again: the store or the rules changed under it.
fn replay_failed(e: TxRejected) -> TraceError {
    ChainError::Replay(Box::new(e)).into()
}

/// A tracer that stops the execution it watches once the struct logger has recorded
/// [`MAX_STRUCT_LOG_STEPS`] steps; other tracers record per call, not per step, and run free.
#[derive(Debug)]
struct Bounded {
    tracer: DebugInspector,
    steps: u64,
    max_steps: u64,
    exceeded: bool,
}

impl Bounded {
    fn new(opts: GethDebugTracingOptions) -> Result<Self, TraceError> {
        let name = opts.tracer.as_ref().map(|t| t.as_str().to_owned());
        let tracer = DebugInspector::new(opts).map_err(|e| match e {
            // A name that is no built-in tracer is read as JavaScript: say what it is instead.
            DebugInspectorError::JsTracerNotEnabled => TraceError::Tracer(format!(
                "unknown tracer {:?}: the node has callTracer, prestateTracer, flatCallTracer, \
                 4byteTracer, muxTracer, noopTracer and the struct logger (no tracer); \
                 JavaScript tracers are not supported",
                name.unwrap_or_default()
            )),
            other => TraceError::Tracer(other.to_string()),
        })?;
        let max_steps = match tracer {
            DebugInspector::Default(..) => MAX_STRUCT_LOG_STEPS,
            _ => u64::MAX,
        };
        Ok(Self {
            tracer,
            steps: 0,
            max_steps,
            exceeded: false,
        })
    }

    /// The trace of the transaction just run; readies the tracer for the next one.
    fn result<S: StateReader>(
        &mut self,
        context: Option<TransactionContext>,
        env: &TxEnv,
        block: &BlockEnv,
        out: &ResultAndState,
        db: &mut Overlay<S>,
    ) -> Result<GethTrace, TraceError> {
        let trace = self
            .tracer
            .get_result(context, env, block, out, db)
            .map_err(|e| TraceError::Tracer(e.to_string()))?;
        self.tracer
            .fuse()
            .map_err(|e| TraceError::Tracer(e.to_string()))?;
        Ok(trace)
    }
}

impl<CTX> Inspector<CTX> for Bounded
where
    CTX: ContextTr<Journal: JournalExt>,
{
    fn initialize_interp(&mut self, interp: &mut Interpreter, context: &mut CTX) {
        self.tracer.initialize_interp(interp, context)
    }

    fn step(&mut self, interp: &mut Interpreter, context: &mut CTX) {
        self.steps += 1;
        if self.steps > self.max_steps {
            self.exceeded = true;
            *context.error() = Err(ContextError::Custom(TraceError::TooLong.to_string()));
            interp.halt_fatal();
            return;
        }
        self.tracer.step(interp, context)
    }

    fn step_end(&mut self, interp: &mut Interpreter, context: &mut CTX) {
        self.tracer.step_end(interp, context)
    }

    fn log(&mut self, context: &mut CTX, log: Log) {
        Inspector::<CTX>::log(&mut self.tracer, context, log)
    }

    fn log_full(&mut self, interp: &mut Interpreter, context: &mut CTX, log: Log) {
        self.tracer.log_full(interp, context, log)
    }

    fn call(&mut self, context: &mut CTX, inputs: &mut CallInputs) -> Option<CallOutcome> {
        self.tracer.call(context, inputs)
    }

    fn call_end(&mut self, context: &mut CTX, inputs: &CallInputs, outcome: &mut CallOutcome) {
        self.tracer.call_end(context, inputs, outcome)
    }

    fn create(&mut self, context: &mut CTX, inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        self.tracer.create(context, inputs)
    }

    fn create_end(
        &mut self,
        context: &mut CTX,
        inputs: &CreateInputs,
        outcome: &mut CreateOutcome,
    ) {
        self.tracer.create_end(context, inputs, outcome)
    }

    fn selfdestruct(&mut self, contract: Address, target: Address, value: U256) {
        Inspector::<CTX>::selfdestruct(&mut self.tracer, contract, target, value)
    }

    fn frame_start(
        &mut self,
        context: &mut CTX,
        frame_input: &mut FrameInput,
    ) -> Option<FrameResult> {
        self.tracer.frame_start(context, frame_input)
    }

    fn frame_end(
        &mut self,
        context: &mut CTX,
        frame_input: &FrameInput,
        frame_result: &mut FrameResult,
    ) {
        self.tracer.frame_end(context, frame_input, frame_result)
    }
}
