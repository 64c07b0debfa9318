//! The server's counters and gauges, rendered in Prometheus' text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets.
const TTFT_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Shared between the engine (which updates) and the HTTP API (which renders).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests accepted into the queue.
    pub requests: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
    /// Prompt tokens prefilled.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Generated tokens per second over the last second of work, in thousandths.
    pub tokens_per_second_milli: AtomicU64,
    /// Requests waiting for a place in the batch (or for their adapter).
    pub queue_depth: AtomicU64,
    /// Sequences in the running batch.
    pub active: AtomicU64,
    /// Adapter lookups found in the cache.
    pub cache_hits: AtomicU64,
    /// Adapter lookups that had to load from disk.
    pub cache_misses: AtomicU64,
    /// Adapters evicted from the cache.
    pub cache_evictions: AtomicU64,
    /// Adapters in the cache.
    pub cached_adapters: AtomicU64,
    /// Bytes of adapter weights in the cache.
    pub cached_bytes: AtomicU64,
    ttft_buckets: [AtomicU64; TTFT_BUCKETS.len()],
    ttft_count: AtomicU64,
    ttft_sum_micros: AtomicU64,
}

impl Metrics {
    /// Records one request's time from arrival to its first generated token.
    pub fn observe_ttft(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in TTFT_BUCKETS.iter().zip(&self.ttft_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.ttft_count.fetch_add(1, Relaxed);
        self.ttft_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            let name = format!("openledger_serve_{name}");
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let get = |a: &AtomicU64| a.load(Relaxed).to_string();
        put(
            "requests_total",
            "counter",
            "Requests accepted.",
            get(&self.requests),
        );
        put(
            "rejected_total",
            "counter",
            "Requests refused: queue full.",
            get(&self.rejected),
        );
        put(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens prefilled.",
            get(&self.prompt_tokens),
        );
        put(
            "generated_tokens_total",
            "counter",
            "Tokens generated.",
            get(&self.generated_tokens),
        );
        let tps = self.tokens_per_second_milli.load(Relaxed) as f64 / 1000.0;
        put(
            "tokens_per_second",
            "gauge",
            "Generated tokens per second, last second of work.",
            tps.to_string(),
        );
        put(
            "queue_depth",
            "gauge",
            "Requests waiting for the batch.",
            get(&self.queue_depth),
        );
        put(
            "active_sequences",
            "gauge",
            "Sequences in the batch.",
            get(&self.active),
        );
        put(
            "adapter_cache_hits_total",
            "counter",
            "Adapter cache hits.",
            get(&self.cache_hits),
        );
        put(
            "adapter_cache_misses_total",
            "counter",
            "Adapter cache misses (loads).",
            get(&self.cache_misses),
        );
        put(
            "adapter_cache_evictions_total",
            "counter",
            "Adapters evicted.",
            get(&self.cache_evictions),
        );
        put(
            "adapter_cache_adapters",
            "gauge",
            "Adapters in the cache.",
            get(&self.cached_adapters),
        );
        put(
            "adapter_cache_bytes",
            "gauge",
            "Bytes of adapters in the cache.",
            get(&self.cached_bytes),
        );
        let name = "openledger_serve_time_to_first_token_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a request's arrival to its first token."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in TTFT_BUCKETS.iter().zip(&self.ttft_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.ttft_count.load(Relaxed);
        let sum = self.ttft_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        out
    }
}
