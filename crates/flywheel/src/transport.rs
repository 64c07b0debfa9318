//! How a client reaches the chain: the node's JSON-RPC methods, over HTTP or in-process.
//!
//! Both transports answer the same methods with the same errors, so a service behaves the same
//! beside the node and apart from it; the in-process one reads views straight from the state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, Bytes};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::core::{ClientError, server::MethodsError};
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::types::ErrorObjectOwned;
use openledger_chain::{CallError, Chain};
use openledger_rpc::metrics::RpcMetrics;
use serde_json::{Value, json};

/// A boxed future, as the object-safe [`Transport`] returns them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// JSON-RPC error code of a reverted call, with the revert data.
const REVERTED: i32 = 3;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The node answered with a JSON-RPC error; a revert carries its data.
    #[error("{message}")]
    Rpc {
        /// The JSON-RPC error code (3: reverted).
        code: i32,
        /// The node's message.
        message: String,
        /// The revert data, for a module's custom error.
        data: Option<Bytes>,
    },
    /// The node could not be reached.
    #[error("cannot reach the node at {url} ({reason}); is `openledger dev` running?")]
    Unreachable {
        /// Where the node was looked for.
        url: String,
        /// What the connection said.
        reason: String,
    },
    /// The answer was not what was asked for.
    #[error("{0}")]
    Malformed(String),
}

impl From<ErrorObjectOwned> for TransportError {
    fn from(e: ErrorObjectOwned) -> Self {
        let data = e
            .data()
            .and_then(|raw| serde_json::from_str::<Bytes>(raw.get()).ok());
        Self::Rpc {
            code: e.code(),
            message: e.message().to_string(),
            data,
        }
    }
}

/// The node's JSON-RPC methods, wherever they are.
pub trait Transport: Send + Sync {
    /// Sends request `method` with positional `params`.
    fn request<'a>(
        &'a self,
        method: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, TransportError>>;

    /// `eth_call` of `input` to `to` at the newest block.
    fn view(&self, to: Address, input: Bytes) -> BoxFuture<'_, Result<Bytes, TransportError>> {
        Box::pin(async move {
            let call = json!({"to": to, "input": input});
            let output = self
                .request("eth_call", vec![call, json!("latest")])
                .await?;
            serde_json::from_value(output).map_err(|e| TransportError::Malformed(e.to_string()))
        })
    }
}

/// A node's JSON-RPC over HTTP.
pub struct Http {
    client: HttpClient,
    url: String,
}

impl Http {
    /// The node at `url`; requests time out after 60 s.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = HttpClientBuilder::default()
            .request_timeout(Duration::from_secs(60))
            .build(url)
            .map_err(|e| anyhow::anyhow!("invalid RPC URL {url}: {e}"))?;
        Ok(Self {
            client,
            url: url.to_string(),
        })
    }
}

impl Transport for Http {
    fn request<'a>(
        &'a self,
        method: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            let mut array = ArrayParams::new();
            for param in params {
                array
                    .insert(param)
                    .map_err(|e| TransportError::Malformed(e.to_string()))?;
            }
            self.client
                .request::<Value, _>(method, array)
                .await
                .map_err(|e| match e {
                    ClientError::Call(object) => object.into(),
                    ClientError::Transport(e) => TransportError::Unreachable {
                        url: self.url.clone(),
                        reason: e.to_string(),
                    },
                    other => TransportError::Malformed(format!(
                        "request to {} failed: {other}",
                        self.url
                    )),
                })
        })
    }
}

/// The node's own methods, called in the node's process: the services of `openledger dev`.
pub struct InProcess {
    chain: Arc<Chain>,
    methods: jsonrpsee::Methods,
    calls: Arc<RpcMetrics>,
}

impl InProcess {
    /// Over `chain` and the JSON-RPC `methods` its server answers with; every call is counted
    /// in `calls` by method (a view as `eth_call`).
    pub fn new(chain: Arc<Chain>, methods: jsonrpsee::Methods, calls: Arc<RpcMetrics>) -> Self {
        Self {
            chain,
            methods,
            calls,
        }
    }
}

impl Transport for InProcess {
    fn request<'a>(
        &'a self,
        method: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        self.calls.count(method);
        Box::pin(async move {
            self.methods
                .call::<_, Value>(method, Positional(params))
                .await
                .map_err(|e| match e {
                    MethodsError::JsonRpc(object) => object.into(),
                    other => TransportError::Malformed(other.to_string()),
                })
        })
    }

    fn view(&self, to: Address, input: Bytes) -> BoxFuture<'_, Result<Bytes, TransportError>> {
        self.calls.count("eth_call");
        let viewed = self.chain.view(to, input).map_err(|e| match e {
            CallError::Reverted(data) => TransportError::Rpc {
                code: REVERTED,
                message: "execution reverted".into(),
                data: Some(data),
            },
            other => TransportError::Rpc {
                code: -32000,
                message: other.to_string(),
                data: None,
            },
        });
        Box::pin(std::future::ready(viewed))
    }
}

/// Positional parameters as jsonrpsee's in-process call takes them.
struct Positional(Vec<Value>);

impl jsonrpsee::core::traits::ToRpcParams for Positional {
    fn to_rpc_params(self) -> Result<Option<Box<serde_json::value::RawValue>>, serde_json::Error> {
        serde_json::value::to_raw_value(&self.0).map(Some)
    }
}
