//! What the serving benchmarks share: a request mix and the closed-loop clients that send it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use openledger_ml::generate::GenerateOptions;
use openledger_serve::engine::{Event, Request};
use tokio::sync::mpsc::unbounded_channel;

/// Closed-loop clients: each sends its next request when its last one ends.
pub const CLIENTS: usize = 32;

/// One request of the mix.
#[derive(Clone)]
pub struct Spec {
    pub adapter: Option<String>,
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
}

/// What a client saw of one request.
pub struct Outcome {
    pub ttft: Duration,
    pub tokens: usize,
}

/// One run of a mode on a scenario.
pub struct Run {
    pub tokens_per_second: f64,
    pub ttfts: Vec<Duration>,
    /// Adapter cache hits and misses, where the mode counts them.
    pub lookups: Option<(u64, u64)>,
}

/// Runs `mix` from `CLIENTS` closed-loop clients and measures it.
pub fn drive(mix: &[Spec], submit: &(dyn Fn(Request) + Sync)) -> Run {
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(mix.len()));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                while let Some(spec) = mix.get(next.fetch_add(1, Relaxed)) {
                    let outcome = request(spec, submit);
                    outcomes.lock().unwrap().push(outcome);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let outcomes = outcomes.into_inner().unwrap();
    let tokens: usize = outcomes.iter().map(|o| o.tokens).sum();
    Run {
        tokens_per_second: tokens as f64 / elapsed.as_secs_f64(),
        ttfts: outcomes.iter().map(|o| o.ttft).collect(),
        lookups: None,
    }
}

/// Sends one request and waits for its end.
pub fn request(spec: &Spec, submit: &(dyn Fn(Request) + Sync)) -> Outcome {
    let (events, mut receiver) = unbounded_channel();
    let arrived = Instant::now();
    submit(Request {
        adapter: spec.adapter.clone(),
        prompt: spec.prompt.clone(),
        options: spec.options.clone(),
        events,
        arrived,
    });
    let mut ttft = None;
    loop {
        match receiver.blocking_recv() {
            Some(Event::Token { .. }) => {
                ttft.get_or_insert(arrived.elapsed());
            }
            Some(Event::Done {
                completion_tokens, ..
            }) => {
                return Outcome {
                    ttft: ttft.unwrap_or_else(|| arrived.elapsed()),
                    tokens: completion_tokens,
                };
            }
            Some(Event::Failed(error)) => panic!("request failed: {error}"),
            None => panic!("the server dropped a request"),
        }
    }
}
