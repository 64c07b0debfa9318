//! JSON-RPC errors with the codes of EIP-1474 and the messages Ethereum clients match on.

use alloy_primitives::Bytes;
use alloy_sol_types::{Revert, SolError};
use jsonrpsee::types::ErrorObjectOwned;
use openledger_chain::{CallError, ChainError, StoreError, SubmitError, clock::ClockError};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Parameters that cannot be understood (-32602).
    #[error("{0}")]
    InvalidParams(String),
    /// A transaction or call refused for a reason of its own (-32000, geth's code).
    #[error("{0}")]
    Rejected(String),
    /// A call that reverted (code 3, with the revert data).
    #[error("execution reverted{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Reverted {
        /// The decoded `Error(string)` reason, if any.
        reason: Option<String>,
        /// The raw revert data.
        data: Bytes,
    },
    /// A request over a configured limit (-32005).
    #[error("{0}")]
    LimitExceeded(String),
    /// A block or other resource that does not exist (-32001).
    #[error("{0}")]
    NotFound(String),
    /// The node failed (-32603).
    #[error("internal error: {0}")]
    Internal(String),
}

impl RpcError {
    /// A revert with `data`, decoding a Solidity `Error(string)` reason when present.
    pub fn reverted(data: Bytes) -> Self {
        let reason = Revert::abi_decode(&data).ok().map(|r| r.reason);
        RpcError::Reverted { reason, data }
    }
}

impl From<RpcError> for ErrorObjectOwned {
    fn from(e: RpcError) -> Self {
        let message = e.to_string();
        match e {
            RpcError::InvalidParams(_) => ErrorObjectOwned::owned(-32602, message, None::<()>),
            RpcError::Rejected(_) => ErrorObjectOwned::owned(-32000, message, None::<()>),
            RpcError::Reverted { data, .. } => ErrorObjectOwned::owned(3, message, Some(data)),
            RpcError::LimitExceeded(_) => ErrorObjectOwned::owned(-32005, message, None::<()>),
            RpcError::NotFound(_) => ErrorObjectOwned::owned(-32001, message, None::<()>),
            RpcError::Internal(_) => ErrorObjectOwned::owned(-32603, message, None::<()>),
        }
    }
}

impl From<ChainError> for RpcError {
    fn from(e: ChainError) -> Self {
        tracing::error!(error = %e, "chain failure while serving a request");
        RpcError::Internal(e.to_string())
    }
}

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> Self {
        ChainError::from(e).into()
    }
}

impl From<ClockError> for RpcError {
    fn from(e: ClockError) -> Self {
        RpcError::InvalidParams(e.to_string())
    }
}

impl From<SubmitError> for RpcError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Chain(e) => e.into(),
            other => RpcError::Rejected(other.to_string()),
        }
    }
}

impl From<CallError> for RpcError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Invalid(msg) => RpcError::Rejected(msg),
            CallError::Reverted(data) => RpcError::reverted(data),
            CallError::Chain(e) => e.into(),
        }
    }
}

/// Result of an RPC handler.
pub type RpcResult<T> = Result<T, RpcError>;
