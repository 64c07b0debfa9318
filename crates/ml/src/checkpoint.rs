//! Hugging Face checkpoint directories: `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`) and `tokenizer.json`.
//!
//! Weights are held in f32 whatever their dtype on disk: the engine trains and attributes on the
//! CPU, where f32 is both the fast and the exact choice.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::ModelConfig;
use crate::error::{MlError, Result};
use crate::llama::Llama;
use crate::weights::{Weights, read_safetensors, write_safetensors};

/// The single-file weights of a checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The configuration of a checkpoint.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer of a checkpoint.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Standard deviation of the initial weights, as Llama's `initializer_range`.
const INIT_STD: f64 = 0.02;

/// Reads a checkpoint directory into a model.
pub fn load_model(dir: &Path, device: &Device) -> Result<Llama> {
    let config = ModelConfig::load(&require(
        dir,
        CONFIG_FILE,
        "a checkpoint needs its config.json",
    )?)?;
    let weights = load_weights(dir, device)?;
    Llama::new(config, &weights)
}

/// Reads the weights of a checkpoint directory, single-file or sharded, as f32.
pub fn load_weights(dir: &Path, device: &Device) -> Result<Weights> {
    let single = dir.join(WEIGHTS_FILE);
    let index = dir.join(INDEX_FILE);
    let files = if single.is_file() {
        vec![single]
    } else if index.is_file() {
        shard_files(dir, &index)?
    } else {
        return Err(MlError::Missing {
            path: single,
            what: "a checkpoint needs model.safetensors or a model.safetensors.index.json with its shards",
        });
    };
    let mut weights = HashMap::new();
    for file in files {
        weights.extend(read_safetensors(&file, device)?);
    }
    Ok(weights)
}

/// Writes `config.json`, `model.safetensors` and, when given, a copy of `tokenizer.json`.
pub fn save_checkpoint(
    dir: &Path,
    config: &ModelConfig,
    weights: &Weights,
    tokenizer: Option<&Path>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| MlError::io(dir, e))?;
    config.save(&dir.join(CONFIG_FILE))?;
    let mut stored = weights.clone();
    if config.tie_word_embeddings {
        stored.remove("lm_head.weight");
    }
    write_safetensors(&dir.join(WEIGHTS_FILE), &stored)?;
    if let Some(source) = tokenizer {
        let target = dir.join(TOKENIZER_FILE);
        if source != target {
            std::fs::copy(source, &target).map_err(|e| MlError::io(source, e))?;
        }
    }
    Ok(())
}

/// Freshly initialised weights for `config`: normal(0, 0.02) matrices, unit norms, zero biases.
/// The same seed gives the same weights on every machine.
pub fn random_weights(config: &ModelConfig, seed: u64, device: &Device) -> Result<Weights> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, INIT_STD as f32).expect("valid std");
    config
        .weight_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            };
            Ok((name, Tensor::from_vec(values, shape, device)?))
        })
        .collect()
}

/// Turns every weight into a training variable, for pre-training or a full fine-tune; the map
/// then holds the variables' live tensors.
pub fn make_trainable(weights: &mut Weights) -> Result<Vec<Var>> {
    weights
        .values_mut()
        .map(|tensor| {
            let var = Var::from_tensor(tensor)?;
            *tensor = var.as_tensor().clone();
            Ok(var)
        })
        .collect()
}

fn require(dir: &Path, file: &str, what: &'static str) -> Result<PathBuf> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(MlError::Missing { path, what })
    }
}

fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| MlError::io(index, e))?;
    let parsed: Index = serde_json::from_str(&text).map_err(|source| MlError::Json {
        path: index.into(),
        source,
    })?;
    let shards: BTreeSet<String> = parsed.weight_map.into_values().collect();
    shards
        .into_iter()
        .map(|shard| require(dir, &shard, "a shard named in model.safetensors.index.json"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn tiny() -> ModelConfig {
        ModelConfig::llama(64, 32, 2, 4, 2)
    }

    #[test]
    fn a_saved_checkpoint_loads_back_to_bit_identical_logits() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let weights = random_weights(&tiny(), 7, &dev)?;
        let model = Llama::new(tiny(), &weights)?;
        save_checkpoint(dir.path(), &tiny(), &weights, None)?;
        let loaded = load_model(dir.path(), &dev)?;
        let tokens = Tensor::new(&[[1u32, 5, 9, 2, 40]], &dev)?;
        let (a, b) = (model.forward(&tokens)?, loaded.forward(&tokens)?);
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn loads_a_sharded_checkpoint_with_untied_head() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let mut config = tiny();
        config.tie_word_embeddings = false;
        config.model_type = "qwen2".into();
        let weights = random_weights(&config, 3, &dev)?;
        config.save(&dir.path().join(CONFIG_FILE))?;
        let (first, second): (Vec<_>, Vec<_>) =
            weights.iter().partition(|(k, _)| k.contains("layers.0"));
        let mut map = serde_json::Map::new();
        for (file, part) in [
            ("model-00001-of-00002.safetensors", first),
            ("model-00002-of-00002.safetensors", second),
        ] {
            let part: Weights = part
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            part.keys()
                .for_each(|k| drop(map.insert(k.clone(), file.into())));
            write_safetensors(&dir.path().join(file), &part)?;
        }
        let index = serde_json::json!({ "metadata": {}, "weight_map": map });
        std::fs::write(dir.path().join(INDEX_FILE), index.to_string()).unwrap();
        let loaded = load_model(dir.path(), &dev)?;
        let tokens = Tensor::new(&[[3u32, 4]], &dev)?;
        let expected = Llama::new(config, &weights)?.forward(&tokens)?;
        assert_eq!(
            loaded.forward(&tokens)?.flatten_all()?.to_vec1::<f32>()?,
            expected.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn bad_checkpoints_fail_with_a_clear_error() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let err = load_model(dir.path(), &dev).unwrap_err().to_string();
        assert!(err.contains("config.json: missing"), "{err}");

        let mut weights = random_weights(&tiny(), 1, &dev)?;
        save_checkpoint(dir.path(), &tiny(), &weights, None)?;
        std::fs::write(
            dir.path().join(WEIGHTS_FILE),
            b"\x08\0\0\0\0\0\0\0{}garbage",
        )
        .unwrap();
        let err = load_model(dir.path(), &dev).unwrap_err().to_string();
        assert!(err.contains("not a valid safetensors file"), "{err}");

        weights.insert(
            "model.norm.weight".into(),
            Tensor::zeros(31, DType::F32, &dev)?,
        );
        save_checkpoint(dir.path(), &tiny(), &weights, None)?;
        let err = load_model(dir.path(), &dev).unwrap_err().to_string();
        assert_eq!(
            err,
            "tensor model.norm.weight has shape [31], expected [32]"
        );

        weights.remove("model.norm.weight");
        save_checkpoint(dir.path(), &tiny(), &weights, None)?;
        let err = load_model(dir.path(), &dev).unwrap_err().to_string();
        assert_eq!(
            err,
            "tensor model.norm.weight is missing from the checkpoint"
        );

        let mut config = tiny();
        config.model_type = "gpt_neox".into();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            serde_json::to_string(&config).unwrap(),
        )
        .unwrap();
        let err = load_model(dir.path(), &dev).unwrap_err().to_string();
        assert!(
            err.starts_with("unsupported architecture \"gpt_neox\""),
            "{err}"
        );
        Ok(())
    }
}
