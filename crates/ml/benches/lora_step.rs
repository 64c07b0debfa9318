//! LoRA step versus full fine-tuning step of the same model, side by side.
//!
//! For each model size it times, in a fresh process each so that peak memory is per mode:
//! - `full`: every weight trains (the peer: a full fine-tune);
//! - `lora-plain`: LoRA rank 8 on q,k,v,o, the base weights frozen but multiplied with candle's
//!   plain matmul, whose backward still computes their gradients;
//! - `lora`: the same adapter through the engine's frozen-weight op, which skips them.
//!
//! It prints the median step time (this machine's step times vary from run to run), training tokens/s and peak resident memory, and the ratio of the full step
//! to each LoRA step. Run: `cargo bench -p openledger-ml --bench lora_step`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use openledger_ml::checkpoint::{make_trainable, random_weights};
use openledger_ml::train::{batch_loss, peak_memory_bytes};
use openledger_ml::{Adapter, Llama, LoraConfig, ModelConfig, data::Batch, data::Example};

const BATCH: usize = 8;
const SEQ: usize = 128;

fn config(size: &str) -> ModelConfig {
    match size {
        "dev" => openledger_ml::devbase::config_with_vocab(openledger_ml::devbase::VOCAB_SIZE),
        _ => {
            let mut c = ModelConfig::llama(8192, 576, 12, 9, 3);
            c.intermediate_size = 1536;
            c
        }
    }
}

fn steps(size: &str) -> usize {
    if size == "dev" { 15 } else { 7 }
}

/// Runs one mode in this process and prints `seconds_per_step peak_bytes` on stdout.
fn child(size: &str, mode: &str) {
    let dev = Device::Cpu;
    let config = config(size);
    let mut weights = random_weights(&config, 1, &dev).unwrap();
    let mut vars = if mode == "lora" {
        Vec::new()
    } else {
        make_trainable(&mut weights).unwrap()
    };
    let mut model = Llama::new(config.clone(), &weights).unwrap();
    if mode != "full" {
        let mut adapter = Adapter::init(
            &config,
            LoraConfig::new(8, 16.0, "q,k,v,o").unwrap(),
            1,
            &dev,
        )
        .unwrap();
        vars = adapter.make_trainable().unwrap();
        adapter.apply(&mut model).unwrap();
    }
    let mut optimizer = AdamW::new(
        vars,
        ParamsAdamW {
            lr: 1e-4,
            ..Default::default()
        },
    )
    .unwrap();
    let examples: Vec<Example> = (0..BATCH)
        .map(|row| {
            let tokens = (0..=SEQ)
                .map(|i| ((i * 31 + row * 7) % config.vocab_size) as u32)
                .collect();
            Example::plain(row, tokens)
        })
        .collect();
    let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), &dev).unwrap();
    let mut step = || {
        let loss = batch_loss(&model, &batch).unwrap();
        let grads = loss.backward().unwrap();
        optimizer.step(&grads).unwrap();
    };
    step();
    let mut times: Vec<f64> = (0..steps(size))
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("{median} {}", peak_memory_bytes().unwrap_or(0));
}

fn main() {
    // SAFETY: nothing has started a thread yet.
    unsafe { openledger_ml::settle_thread_count() };
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], &args[i + 2]);
        return;
    }
    let sizes: Vec<&str> = if args.iter().any(|a| a == "--quick") {
        vec!["dev"]
    } else {
        vec!["dev", "50m"]
    };
    println!(
        "LoRA rank 8 on q,k,v,o vs full fine-tuning; batch {BATCH} x {SEQ} tokens, {} threads",
        candle_core::utils::get_num_threads()
    );
    println!(
        "{:<5} {:>7} {:<11} {:>9} {:>10} {:>9} {:>10}",
        "model", "params", "mode", "s/step", "tokens/s", "peak MiB", "full/mode"
    );
    for size in sizes {
        let params = config(size).parameter_count();
        let mut full = None;
        for mode in ["full", "lora-plain", "lora"] {
            let out = Command::new(&args[0])
                .args(["--child", size, mode])
                .output()
                .expect("run the child");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let mut fields = text.split_whitespace();
            let secs: f64 = fields.next().unwrap().parse().unwrap();
            let peak: f64 = fields.next().unwrap().parse().unwrap();
            let full_secs = *full.get_or_insert(secs);
            println!(
                "{size:<5} {:>6.1}M {mode:<11} {secs:>9.3} {:>10.0} {:>9.0} {:>9.2}x",
                params as f64 / 1e6,
                (BATCH * SEQ) as f64 / secs,
                peak / 1048576.0,
                full_secs / secs
            );
        }
    }
}
