//! Requests per method, counted as they arrive (single calls, batch entries and notifications
//! alike): what an operator watches on `/metrics`, and how the benchmarks count the chain round
//! trips a completion takes.
//!
//! Only the server's own method names are counted by name, fixed when it starts; every other
//! name a client sends is counted as `other`, so a client cannot grow the table.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use jsonrpsee::{
    core::middleware::{Batch, Notification, RpcServiceT},
    types::Request,
};

/// The label of names the server does not serve.
pub const OTHER: &str = "other";

/// Requests received, by method.
#[derive(Debug, Default)]
pub struct RpcMetrics {
    counts: BTreeMap<&'static str, AtomicU64>,
    other: AtomicU64,
}

impl RpcMetrics {
    /// Counters for `methods`, the names the server serves.
    pub fn new(methods: impl IntoIterator<Item = &'static str>) -> Self {
        Self {
            counts: methods
                .into_iter()
                .map(|m| (m, AtomicU64::new(0)))
                .collect(),
            other: AtomicU64::new(0),
        }
    }

    /// Counts one request for `method`.
    pub fn count(&self, method: &str) {
        self.counts
            .get(method)
            .unwrap_or(&self.other)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Every method asked for at least once, with its count, by name; then [`OTHER`].
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut counts: Vec<(&'static str, u64)> = self
            .counts
            .iter()
            .map(|(m, c)| (*m, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect();
        counts.push((OTHER, self.other.load(Ordering::Relaxed)));
        counts
    }
}

/// The RPC middleware that counts into [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct Counted<S> {
    /// The service counted.
    pub inner: S,
    /// Where counts go.
    pub metrics: Arc<RpcMetrics>,
}

impl<S: RpcServiceT + Send + Sync> RpcServiceT for Counted<S> {
    type MethodResponse = S::MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        self.metrics.count(request.method_name());
        self.inner.call(request)
    }

    fn batch<'a>(
        &self,
        requests: Batch<'a>,
    ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        for entry in requests.iter().flatten() {
            self.metrics.count(entry.method_name());
        }
        self.inner.batch(requests)
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.metrics.count(n.method_name());
        self.inner.notification(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_server_does_not_serve_are_counted_together() {
        let metrics = RpcMetrics::new(["eth_call", "eth_chainId"]);
        metrics.count("eth_call");
        metrics.count("eth_call");
        for i in 0..1_000 {
            metrics.count(&format!("made_up_{i}"));
        }
        assert_eq!(metrics.counts(), vec![("eth_call", 2), (OTHER, 1_000)]);
    }
}
