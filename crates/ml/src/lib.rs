//! The ModelFactory engine of OpenLedger: a Llama-style transformer on candle, LoRA fine-tuning,
//! a BPE tokenizer and the synthetic domain data the project trains and tests on.
//!
//! Nothing here downloads anything: checkpoints are Hugging Face directories on disk, adapters are
//! written in the PEFT format, and the dev base model is trained from data this crate generates.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod devbase;
pub mod error;
pub mod factory;
pub mod frozen;
pub mod fused;
pub mod generate;
pub mod llama;
pub mod lora;
pub mod plot;
pub mod synth;
pub mod tokenizer;
pub mod train;

pub use candle_core::Device;
pub use config::ModelConfig;
pub use error::{MlError, Result};
pub use llama::{KvCache, Llama, Weights};
pub use lora::{Adapter, LoraConfig, LoraSet};
