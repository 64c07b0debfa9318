//! Span index build, size, load and query, beside Infini-gram on the same tokens and queries.
//!
//! It generates a corpus of rows with Zipf-distributed token ids (vocabulary 32,000; a tenth of
//! the rows start with the same boilerplate header), builds the index, saves it, opens it again
//! (memory-mapped) and attributes 256-token outputs: half stitched from four corpus passages of
//! 64 tokens with two tokens changed in each (what a model reproducing its data looks like), half
//! novel text. Then, when a Python with the `infini-gram` package is given, the peer builds its
//! index of the same rows (its Rust `rust_indexing`, one process) and answers the same outputs
//! with `InfiniGramEngine.attribute` (the OLMoTrace operation: maximal spans of at least
//! `min_len` tokens and the documents containing them); the bench prints both and the ratios.
//!
//! Run: `cargo bench -p openledger-attribution --bench span_index -- [--tokens N] [--queries Q]
//! [--peer-python PATH]` (defaults: 100,000,000 tokens, 1,000 queries, and the peer from
//! `target/bench-venv/bin/python` when that exists).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use openledger_attribution::{RowTokens, SpanIndex, SpanOptions};

const VOCAB: u32 = 32_000;
const QUERY_LEN: usize = 256;
const TOKENIZER: &str = "sha256:bench";

/// SplitMix64: a small, seeded generator so every run indexes and queries the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Token ids with Zipf(1) frequencies, like words in text.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new() -> Self {
        let mut cdf: Vec<f64> = (1..=VOCAB).map(|k| 1.0 / k as f64).collect();
        let mut sum = 0.0;
        for p in cdf.iter_mut() {
            sum += *p;
            *p = sum;
        }
        cdf.iter_mut().for_each(|p| *p /= sum);
        Self(cdf)
    }

    fn sample(&self, rng: &mut Rng, out: &mut Vec<u32>, n: usize) {
        for _ in 0..n {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            out.push(self.0.partition_point(|&c| c < u).min(VOCAB as usize - 1) as u32);
        }
    }
}

struct Corpus {
    tokens: Vec<u32>,
    /// `(start, end)` of each row in `tokens`.
    rows: Vec<(usize, usize)>,
    ids: Vec<String>,
}

fn corpus(total: usize, zipf: &Zipf) -> Corpus {
    let mut rng = Rng(7);
    let mut header = Vec::new();
    zipf.sample(&mut rng, &mut header, 16);
    let (mut tokens, mut rows) = (Vec::with_capacity(total + 512), Vec::new());
    while tokens.len() < total {
        let start = tokens.len();
        if rng.below(10) == 0 {
            tokens.extend_from_slice(&header);
        }
        let len = 64 + rng.below(449);
        zipf.sample(&mut rng, &mut tokens, len);
        rows.push((start, tokens.len()));
    }
    let ids = (0..rows.len()).map(|i| format!("row-{i}")).collect();
    Corpus { tokens, rows, ids }
}

/// Outputs to attribute: even ones reproduce corpus passages (with edits), odd ones are novel.
fn queries(corpus: &Corpus, count: usize, zipf: &Zipf) -> Vec<Vec<u32>> {
    let mut rng = Rng(11);
    (0..count)
        .map(|q| {
            let mut out = Vec::with_capacity(QUERY_LEN);
            if q % 2 == 1 {
                zipf.sample(&mut rng, &mut out, QUERY_LEN);
                return out;
            }
            while out.len() < QUERY_LEN {
                let (start, end) = corpus.rows[rng.below(corpus.rows.len())];
                let from = start + rng.below(end - start - 63);
                let at = out.len();
                out.extend_from_slice(&corpus.tokens[from..from + 64]);
                for _ in 0..2 {
                    out[at + rng.below(64)] = rng.below(VOCAB as usize) as u32;
                }
            }
            out
        })
        .collect()
}

fn contribution(row: usize) -> String {
    format!("contributor-{}", row % 1000)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

struct Figures {
    build_s: f64,
    bytes: u64,
    load_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    spans: usize,
}

fn ours(corpus: &Corpus, queries: &[Vec<u32>], dir: &Path) -> Figures {
    let contributions: Vec<String> = (0..corpus.rows.len()).map(contribution).collect();
    let rows = corpus
        .rows
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| RowTokens {
            contribution: &contributions[i],
            row: &corpus.ids[i],
            tokens: &corpus.tokens[s..e],
        });
    let started = Instant::now();
    let index = SpanIndex::build(rows, TOKENIZER).unwrap();
    let build_s = started.elapsed().as_secs_f64();
    index.save(dir).unwrap();
    drop(index);
    let started = Instant::now();
    let index = SpanIndex::open(dir).unwrap();
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let options = SpanOptions::default();
    let mut spans = 0;
    let mut times: Vec<Duration> = queries
        .iter()
        .map(|q| {
            let started = Instant::now();
            let a = index.attribute(q, TOKENIZER, &options).unwrap();
            let t = started.elapsed();
            spans += a.spans.len();
            t
        })
        .collect();
    times.sort();
    Figures {
        build_s,
        bytes: dir_size(dir),
        load_ms,
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        spans,
    }
}

/// Writes the rows and queries in Infini-gram's layout and runs `infinigram_peer.py` on them.
fn peer(python: &Path, corpus: &Corpus, queries: &[Vec<u32>], dir: &Path) -> Option<Figures> {
    std::fs::create_dir_all(dir).unwrap();
    let (mut data, mut offsets) = (Vec::new(), Vec::new());
    for &(s, e) in &corpus.rows {
        offsets.extend_from_slice(&(data.len() as u64).to_le_bytes());
        data.extend_from_slice(&[0xff, 0xff]);
        for &t in &corpus.tokens[s..e] {
            data.extend_from_slice(&(t as u16).to_le_bytes());
        }
    }
    std::fs::write(dir.join("tokenized.0"), data).unwrap();
    std::fs::write(dir.join("offset.0"), offsets).unwrap();
    let queries_path = dir.with_extension("queries.json");
    std::fs::write(&queries_path, serde_json::to_vec(queries).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/infinigram_peer.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir)
        .arg(&queries_path)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "infini-gram peer failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = |k: &str| v[k].as_f64().unwrap();
    Some(Figures {
        build_s: f("build_s"),
        bytes: dir_size(dir),
        load_ms: f("load_ms"),
        p50_ms: f("p50_ms"),
        p99_ms: f("p99_ms"),
        spans: f("spans") as usize,
    })
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn print(name: &str, f: &Figures, tokens: usize) {
    println!(
        "{name:<12} {:>8.1} {:>10.2} {:>9.2} {:>9.1} {:>8.2} {:>8.2} {:>8}",
        f.build_s,
        tokens as f64 / f.build_s / 1e6,
        f.bytes as f64 / tokens as f64,
        f.load_ms,
        f.p50_ms,
        f.p99_ms,
        f.spans
    );
}

fn main() {
    let total: usize = arg("--tokens").map_or(100_000_000, |s| s.parse().unwrap());
    let count: usize = arg("--queries").map_or(1000, |s| s.parse().unwrap());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = arg("--peer-python")
        .map(PathBuf::from)
        .or_else(|| Some(root.join("target/bench-venv/bin/python")).filter(|p| p.exists()));
    let zipf = Zipf::new();
    let corpus = corpus(total, &zipf);
    let queries = queries(&corpus, count, &zipf);
    let tokens = corpus.tokens.len();
    println!(
        "{tokens} tokens in {} rows; {count} outputs of {QUERY_LEN} tokens; min span 8; one core each",
        corpus.rows.len()
    );
    let work = tempfile::tempdir().unwrap();
    let ours = ours(&corpus, &queries, &work.path().join("openledger"));
    let peer = python.and_then(|p| peer(&p, &corpus, &queries, &work.path().join("infini-gram")));
    println!(
        "{:<12} {:>8} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "engine", "build s", "Mtok/s", "B/token", "load ms", "p50 ms", "p99 ms", "spans"
    );
    print("openledger", &ours, tokens);
    match peer {
        Some(p) => {
            print("infini-gram", &p, tokens);
            println!(
                "ratio (infini-gram / openledger): build {:.2}x, size {:.2}x, p50 {:.2}x, p99 {:.2}x",
                p.build_s / ours.build_s,
                p.bytes as f64 / ours.bytes as f64,
                p.p50_ms / ours.p50_ms,
                p.p99_ms / ours.p99_ms
            );
        }
        None => println!("(no infini-gram peer: give --peer-python or create target/bench-venv)"),
    }
}
