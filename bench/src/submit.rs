//! The submitting side of the load: `eth_sendRawTransaction` over plain HTTP/1.1 keep-alive
//! connections, one request in flight per connection.
//!
//! The load generator shares the machine's cores with the node under test, so every microsecond it
//! spends per transaction is taken from the node. A general JSON-RPC client (tracing, a task per
//! call, a pooled client, request serialization) cost ~55 µs a transaction here, a third of what
//! the node needed; this submitter builds every request before the clock starts and then only
//! writes them and reads the answers, on `concurrency` connections each driven by one task.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use alloy_primitives::Bytes;
use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::{
    Request,
    body::Bytes as Body,
    client::conn::http1::{self, SendRequest},
    header::{self, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, task::JoinSet};

/// Pre-built `eth_sendRawTransaction` requests, one per transaction, with the transaction's
/// index as the JSON-RPC id.
pub fn requests(txs: &[Bytes]) -> Vec<Body> {
    txs.iter()
        .enumerate()
        .map(|(id, raw)| call(id, "eth_sendRawTransaction", serde_json::json!([raw])))
        .collect()
}

/// `count` pre-built calls of a method that takes no parameters, such as `eth_chainId`: what a
/// node answers at no cost beyond HTTP and JSON-RPC.
pub fn trivial_calls(method: &str, count: usize) -> Vec<Body> {
    (0..count)
        .map(|id| call(id, method, serde_json::json!([])))
        .collect()
}

fn call(id: usize, method: &str, params: serde_json::Value) -> Body {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": method,
        "params": params,
    })
    .to_string()
    .into()
}

/// The JSON-RPC answer to one submission: which transaction it answers (the id is its index) and
/// the node's refusal, if any; an accepted one carries its hash, which the watcher sees again in
/// the block that includes it.
#[derive(serde::Deserialize)]
struct Response {
    id: usize,
    error: Option<serde_json::Value>,
}

/// Refusals that say "not now" rather than "never": the pool, or the sender's share of it, is
/// full until the next block takes transactions out.
const BACKPRESSURE: [&str; 2] = ["txpool is full", "account limit exceeded"];

/// How long a submitter waits before sending refused-for-now transactions again.
const BACKPRESSURE_PAUSE: Duration = Duration::from_millis(5);

/// How the load is sent: `concurrency` connections, each with one HTTP request in flight that
/// carries `batch` transactions (a single JSON-RPC call when `batch` is 1, a JSON-RPC batch
/// otherwise).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Connections, each with one request in flight.
    pub concurrency: usize,
    /// Transactions per HTTP request.
    pub batch: usize,
}

/// What the submitters saw.
pub struct Submitted {
    /// When each transaction was first sent, relative to the start, in the order of the
    /// requests.
    pub sent: Vec<Duration>,
    /// Submissions refused for now (backpressure) and sent again: when not zero, the node's pool
    /// limits, not its speed, bounded part of the run.
    pub refused: usize,
}

/// Sends every request to `addr`. Backpressure is answered by sending again a moment later, as
/// a client would; any other error fails the run: every request is meant to succeed (a load
/// pre-signed to be valid, or the floor's trivial calls), so it means the node lost or
/// rejected one.
pub async fn submit_all(
    addr: SocketAddr,
    requests: Vec<Body>,
    shape: Shape,
    started: Instant,
) -> anyhow::Result<Submitted> {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let host = HeaderValue::try_from(addr.to_string())?;
    let mut workers = JoinSet::new();
    for _ in 0..shape.concurrency.max(1) {
        let worker = Worker {
            connection: connect(addr).await?,
            host: host.clone(),
            requests: requests.clone(),
            refused: refused.clone(),
        };
        workers.spawn(worker.run(next.clone(), shape.batch.max(1), started));
    }
    let mut sent = vec![Duration::ZERO; requests.len()];
    while let Some(done) = workers.join_next().await {
        for (index, at) in done?? {
            sent[index] = at;
        }
    }
    Ok(Submitted {
        sent,
        refused: refused.load(Ordering::Relaxed),
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Body>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One connection and the requests it takes from.
struct Worker {
    connection: SendRequest<Full<Body>>,
    host: HeaderValue,
    requests: Arc<Vec<Body>>,
    refused: Arc<AtomicUsize>,
}

impl Worker {
    /// Takes the next `batch` unsent requests until none is left.
    async fn run(
        mut self,
        next: Arc<AtomicUsize>,
        batch: usize,
        started: Instant,
    ) -> anyhow::Result<Vec<(usize, Duration)>> {
        let mut sent = Vec::new();
        loop {
            let first = next.fetch_add(batch, Ordering::Relaxed);
            if first >= self.requests.len() {
                return Ok(sent);
            }
            let mut unsent: Vec<usize> =
                (first..(first + batch).min(self.requests.len())).collect();
            let at = started.elapsed();
            sent.extend(unsent.iter().map(|&index| (index, at)));
            loop {
                unsent = self
                    .send(&unsent)
                    .await
                    .with_context(|| format!("sending requests {unsent:?}"))?;
                if unsent.is_empty() {
                    break;
                }
                tokio::time::sleep(BACKPRESSURE_PAUSE).await;
            }
        }
    }

    /// Sends the requests at `indices` in one HTTP request; returns those refused for now.
    async fn send(&mut self, indices: &[usize]) -> anyhow::Result<Vec<usize>> {
        let body = match indices {
            [single] => self.requests[*single].clone(),
            _ => {
                let mut joined = b"[".to_vec();
                for (k, &index) in indices.iter().enumerate() {
                    if k > 0 {
                        joined.push(b',');
                    }
                    joined.extend_from_slice(&self.requests[index]);
                }
                joined.push(b']');
                joined.into()
            }
        };
        let request = Request::post("/")
            .header(header::HOST, self.host.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        self.connection.ready().await?;
        let response = self.connection.send_request(request).await?;
        let answer = response.into_body().collect().await?.to_bytes();
        let answers: Vec<Response> = match indices {
            [_] => vec![serde_json::from_slice(&answer)?],
            _ => serde_json::from_slice(&answer)?,
        };
        anyhow::ensure!(
            answers.len() == indices.len(),
            "{} answers to {} requests",
            answers.len(),
            indices.len()
        );
        let mut again = Vec::new();
        for Response { id, error } in answers {
            let Some(error) = error else { continue };
            let message = error["message"].as_str().unwrap_or_default();
            if !BACKPRESSURE.iter().any(|m| message.starts_with(m)) {
                bail!("request {id} refused: {error}");
            }
            again.push(id);
        }
        self.refused.fetch_add(again.len(), Ordering::Relaxed);
        Ok(again)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alloy_primitives::{Address, keccak256};
    use alloy_signer_local::PrivateKeySigner;
    use jsonrpsee::http_client::HttpClientBuilder;
    use openledger_chain::{
        Chain, ChainConfig, Store, mempool::PoolLimits, miner, modules::Modules,
    };
    use openledger_primitives::Genesis;
    use openledger_rpc::RpcConfig;

    use super::*;
    use crate::{
        load::{Inclusions, watch_inclusions},
        workload::{Workload, dev_signer, presign},
    };

    const CHAIN_ID: u64 = 1337;

    fn presigned(senders: &[PrivateKeySigner], count: usize) -> Vec<Bytes> {
        let nonces = vec![0; senders.len()];
        presign(
            Workload::Native,
            senders,
            &nonces,
            CHAIN_ID,
            Address::ZERO,
            count,
        )
    }

    /// A chain in memory behind the real JSON-RPC server, on a free local port.
    async fn serve(config: ChainConfig) -> (Arc<Chain>, openledger_rpc::RpcServer) {
        let chain = Arc::new(Chain::open(Store::in_memory().unwrap(), config).unwrap());
        let rpc = RpcConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..RpcConfig::default()
        };
        let server = openledger_rpc::start(chain.clone(), rpc).await.unwrap();
        (chain, server)
    }

    /// The request floor's calls are real calls the node answers, one by one and in batches:
    /// an unknown method or a malformed request would be an error, which fails the run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_request_floor_calls_are_answered() {
        let config = ChainConfig {
            genesis: Genesis::dev(CHAIN_ID, &[]),
            modules: Modules::default(),
            pool: PoolLimits::default(),
        };
        let (_chain, server) = serve(config).await;
        for batch in [1, 7] {
            let shape = Shape {
                concurrency: 3,
                batch,
            };
            let calls = trivial_calls("eth_chainId", 50);
            // Ok means every one of the 50 calls was answered, and none with an error.
            let answered = tokio::time::timeout(
                Duration::from_secs(30),
                submit_all(server.local_addr, calls, shape, Instant::now()),
            )
            .await
            .expect("50 calls are answered within 30 s")
            .unwrap();
            assert_eq!(answered.refused, 0);
        }
        let unknown = trivial_calls("eth_noSuchMethod", 1);
        let shape = Shape {
            concurrency: 1,
            batch: 1,
        };
        let refused = submit_all(server.local_addr, unknown, shape, Instant::now()).await;
        assert!(refused.is_err(), "an unknown method fails the run");
        server.stop().await;
    }

    /// A load larger than the pool lets one sender hold still lands whole: what the pool refuses
    /// for now is sent again once blocks make room, and the watcher sees every transaction in a
    /// block. Runs against the real JSON-RPC server over HTTP.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_over_the_sender_limit_lands_whole() {
        let senders: Vec<PrivateKeySigner> = (1..=3).map(|i| dev_signer(i).unwrap()).collect();
        let addresses: Vec<Address> = senders.iter().map(|s| s.address()).collect();
        let config = ChainConfig {
            genesis: Genesis::dev(CHAIN_ID, &addresses),
            modules: Modules::default(),
            pool: PoolLimits {
                max_per_sender: 2,
                ..PoolLimits::default()
            },
        };
        let (chain, server) = serve(config).await;

        // With nothing mined, a batch of three transactions of one sender is answered with one
        // of them refused for now (the pool holds two a sender), which is accepted once a block
        // has made room.
        let refused = Arc::new(AtomicUsize::new(0));
        let mut worker = Worker {
            connection: connect(server.local_addr).await.unwrap(),
            host: HeaderValue::try_from(server.local_addr.to_string()).unwrap(),
            requests: Arc::new(requests(&presigned(&senders[2..], 3))),
            refused: refused.clone(),
        };
        let again = worker.send(&[0, 1, 2]).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(refused.load(Ordering::Relaxed), 1);
        chain.produce_block(chain.now()).unwrap();
        assert_eq!(worker.send(&again).await.unwrap(), Vec::<usize>::new());

        // Then a whole load from the other two senders.
        let landed = land(&chain, &server, &presigned(&senders[..2], 40)).await;
        assert_eq!(
            landed.full_blocks, 0,
            "30 million gas a block is not filled"
        );
        let reader = chain.reader().unwrap();
        for sender in &addresses[..2] {
            assert_eq!(reader.account(sender).unwrap().unwrap().nonce, 20);
        }
        server.stop().await;
    }

    /// Submits `txs` over HTTP with a block mined whenever transactions arrive, and waits until
    /// the watcher has seen each included.
    async fn land(
        chain: &Arc<Chain>,
        server: &openledger_rpc::RpcServer,
        txs: &[Bytes],
    ) -> Inclusions {
        let miner = tokio::spawn(miner::run(
            chain.clone(),
            openledger_chain::clock::Mining::OnArrival,
        ));
        let client = HttpClientBuilder::default()
            .build(format!("http://{}", server.local_addr))
            .unwrap();
        let started = Instant::now();
        let watcher = tokio::spawn(watch_inclusions(
            client,
            0,
            txs.iter().map(keccak256).collect(),
            Workload::Native.tx_gas(),
            started,
        ));
        let shape = Shape {
            concurrency: 4,
            batch: 1,
        };
        tokio::time::timeout(
            Duration::from_secs(60),
            submit_all(server.local_addr, requests(txs), shape, started),
        )
        .await
        .expect("the load is submitted within a minute")
        .unwrap();
        let landed = tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .expect("every transaction is included within a minute")
            .unwrap()
            .unwrap();
        miner.abort();
        landed
    }

    /// When the chain's gas limit, not the node, bounds a run, the watcher says so: with room
    /// for one transfer a block, each of the nine blocks that hold the load is full.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_the_gas_limit_filled_are_counted() {
        let senders: Vec<PrivateKeySigner> = (1..=3).map(|i| dev_signer(i).unwrap()).collect();
        let addresses: Vec<Address> = senders.iter().map(|s| s.address()).collect();
        let mut genesis = Genesis::dev(CHAIN_ID, &addresses);
        genesis.gas_limit = Workload::Native.tx_gas();
        let config = ChainConfig {
            genesis,
            modules: Modules::default(),
            pool: PoolLimits::default(),
        };
        let (chain, server) = serve(config).await;
        let txs = presigned(&senders, 9);
        let landed = land(&chain, &server, &txs).await;
        assert!(landed.at.iter().all(|at| !at.is_zero()));
        assert_eq!(landed.full_blocks, 9);
        server.stop().await;
    }
}
