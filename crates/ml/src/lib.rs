//! The ModelFactory engine of OpenLedger: a Llama-style transformer on candle, LoRA fine-tuning,
//! a BPE tokenizer and the synthetic domain data the project trains and tests on.
//!
//! Nothing here downloads anything: checkpoints are Hugging Face directories on disk, adapters are
//! written in the PEFT format, and the dev base model is trained from data this crate generates.

mod attention;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod devbase;
pub mod error;
pub mod factory;
pub mod frozen;
pub mod fused;
pub mod generate;
pub mod gguf;
pub mod gradients;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod lora;
pub mod multi_lora;
pub mod plot;
pub mod quant;
pub mod synth;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use candle_core::Device;
pub use config::ModelConfig;
pub use error::{MlError, Result};
pub use llama::{KvCache, Llama};
pub use lora::{Adapter, LoraConfig};
pub use multi_lora::LoraSet;
pub use weights::Weights;

/// Fixes candle's thread count in `RAYON_NUM_THREADS` (when the user has not) to candle's own
/// default.
///
/// candle reads its thread count before every matrix product, and without that variable it
/// counts the physical cores by parsing `/proc/cpuinfo` each time: on a small model that is a
/// third of the time spent serving or training.
///
/// # Safety
/// It sets an environment variable, so it must run before the process starts a second thread.
pub unsafe fn settle_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        // SAFETY: the caller guarantees that no other thread is running.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
}
