//! The recipe of the dev base model: the tiny Llama that `openledger dev`, the demo and the tests
//! fine-tune when the user brings no checkpoint of their own.
//!
//! It is trained from scratch on generated text from every domain, so no weights are shipped or
//! downloaded; the recipe is deterministic, so every machine builds the same model.

use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::factory::{DataOptions, Pretrain};
use crate::synth::{DOMAINS, SynthOptions, generate};
use crate::train::TrainOptions;

/// Largest vocabulary of the dev base model's tokenizer.
pub const VOCAB_SIZE: usize = 2048;

/// Seed of the dev base model's data, tokenizer and weights.
pub const SEED: u64 = 20_260_101;

/// The dev base model's shape: 128 wide, 4 layers, grouped-query attention with 2 KV heads;
/// the vocabulary is the tokenizer's.
pub fn config_with_vocab(vocab_size: usize) -> ModelConfig {
    let mut config = ModelConfig::llama(vocab_size, 128, 4, 4, 2);
    config.max_position_embeddings = 256;
    config
}

/// Writes the dev base model's training corpus under `work` and returns the pre-training job
/// that builds the model into `out`.
pub fn recipe(work: &Path, out: &Path) -> Result<Pretrain> {
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, domain) in DOMAINS.iter().enumerate() {
        let options = SynthOptions {
            domain: domain.to_string(),
            contributors: 6,
            rows: 150,
            seed: SEED + i as u64,
            noise_contributor: None,
        };
        let dir = work.join(domain);
        let manifest = generate(&options, &dir)?;
        files.extend(manifest.contributors.iter().map(|c| dir.join(&c.file)));
    }
    Ok(Pretrain {
        config: config_with_vocab(VOCAB_SIZE),
        vocab_size: VOCAB_SIZE,
        data: DataOptions {
            files,
            eval_split: 0.1,
            context: 128,
        },
        out: out.into(),
        train: TrainOptions {
            lr: 3e-3,
            batch_size: 32,
            epochs: 3,
            warmup: 0.05,
            weight_decay: 0.01,
            seed: SEED,
            ..Default::default()
        },
    })
}
