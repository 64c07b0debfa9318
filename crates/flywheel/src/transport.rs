//! How a client reaches the chain: the node's JSON-RPC methods over HTTP, or in-process.
//!
//! Both are alloy transports under one [`RpcClient`], so a service behaves the same beside the
//! node and apart from it: the same methods, the same errors, the same fillers above them.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use alloy_json_rpc::{RequestPacket, Response, ResponsePacket, SerializedRequest};
use alloy_rpc_client::RpcClient;
use alloy_transport::{TransportError, TransportErrorKind, TransportFut};
use openledger_rpc::metrics::RpcMetrics;

/// How long one request to a node over HTTP may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the node's JSON-RPC at `url`, over HTTP.
pub fn http(url: &str) -> anyhow::Result<RpcClient> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("invalid RPC URL {url}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("invalid RPC URL {url}: the client speaks JSON-RPC over http:// or https://");
    }
    let client = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build()?;
    let http = alloy_transport_http::Http::with_client(client, parsed);
    let is_local = alloy_transport::utils::guess_local_url(url);
    Ok(RpcClient::new(http, is_local))
}

/// The node's own JSON-RPC methods, called in the node's process: the services of
/// `openledger dev` reach the chain without a round trip through a socket.
#[derive(Clone)]
pub struct InProcess {
    methods: jsonrpsee::Methods,
    calls: Arc<RpcMetrics>,
}

impl InProcess {
    /// Over the JSON-RPC `methods` the node's server answers with; every call is counted in
    /// `calls` by method.
    pub fn new(methods: jsonrpsee::Methods, calls: Arc<RpcMetrics>) -> Self {
        Self { methods, calls }
    }

    /// A client over these methods.
    pub fn client(self) -> RpcClient {
        RpcClient::new(self, true)
    }

    async fn answer(&self, request: SerializedRequest) -> Result<Response, TransportError> {
        self.calls.count(request.method());
        let (answer, _) = self
            .methods
            .raw_json_request(request.serialized().get(), 1)
            .await
            .map_err(TransportErrorKind::custom)?;
        serde_json::from_str(answer.get()).map_err(|e| TransportError::deser_err(e, answer.get()))
    }
}

impl tower::Service<RequestPacket> for InProcess {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, packet: RequestPacket) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            match packet {
                RequestPacket::Single(request) => {
                    Ok(ResponsePacket::Single(this.answer(request).await?))
                }
                RequestPacket::Batch(requests) => {
                    let mut answers = Vec::with_capacity(requests.len());
                    for request in requests {
                        answers.push(this.answer(request).await?);
                    }
                    Ok(ResponsePacket::Batch(answers))
                }
            }
        })
    }
}
