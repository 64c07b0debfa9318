//! `/metrics` of `openledger dev`: the chain's state in Prometheus' text format, for a dashboard
//! or an alert on a stuck producer or a filling pool, the JSON-RPC requests served by method, and
//! the calls the node's own services make to the chain in-process, by method.

use std::fmt::Write;
use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use openledger_chain::Chain;
use openledger_rpc::metrics::RpcMetrics;

/// The route.
pub fn router(chain: Arc<Chain>, rpc: Arc<RpcMetrics>, services: Arc<RpcMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state((chain, rpc, services))
}

type Counters = (Arc<Chain>, Arc<RpcMetrics>, Arc<RpcMetrics>);

async fn render(State((chain, rpc, services)): State<Counters>) -> impl IntoResponse {
    let head = chain.head().header;
    let (pending, queued) = match chain.pool_counts() {
        Ok(counts) => counts,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let gauges = [
        (
            "chain_head_block",
            "The newest block's number.",
            head.number as f64,
        ),
        (
            "chain_head_timestamp_seconds",
            "The newest block's timestamp.",
            head.timestamp as f64,
        ),
        (
            "chain_head_gas_used",
            "Gas used by the newest block.",
            head.gas_used as f64,
        ),
        (
            "chain_gas_limit",
            "The block gas limit.",
            head.gas_limit as f64,
        ),
        (
            "chain_next_base_fee_wei",
            "The next block's base fee.",
            chain.next_base_fee() as f64,
        ),
        (
            "txpool_pending",
            "Pooled transactions ready to be included.",
            pending as f64,
        ),
        (
            "txpool_queued",
            "Pooled transactions waiting for a nonce gap.",
            queued as f64,
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP openledger_{name} {help}");
        let _ = writeln!(out, "# TYPE openledger_{name} gauge");
        let _ = writeln!(out, "openledger_{name} {value}");
    }
    counter(
        &mut out,
        "rpc_requests_total",
        "JSON-RPC requests received, by method (batch entries each).",
        &rpc,
    );
    counter(
        &mut out,
        "services_chain_calls_total",
        "Calls the node's services (ledger, settlement batcher, trainer, indexer) made to the chain in-process, by JSON-RPC method.",
        &services,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Writes counter `name` by method.
fn counter(out: &mut String, name: &str, help: &str, counts: &RpcMetrics) {
    let _ = writeln!(out, "# HELP openledger_{name} {help}");
    let _ = writeln!(out, "# TYPE openledger_{name} counter");
    for (method, count) in counts.counts() {
        let _ = writeln!(out, "openledger_{name}{{method=\"{method}\"}} {count}");
    }
}
