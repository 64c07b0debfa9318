//! LoRA adapters and their Hugging Face PEFT files.
//!
//! An adapter adds `alpha/rank · B·A` to chosen projections of a frozen base model. It is saved as
//! PEFT saves it (`adapter_config.json` and `adapter_model.safetensors` with keys such as
//! `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), so PEFT, vLLM and LoRAX load
//! what ModelFactory trains, and adapters trained there load here.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, PROJECTIONS};
use crate::error::{MlError, Result};
use crate::llama::Llama;
use crate::multi_lora::{LoraSet, LoraWeights};
use crate::weights::{column_major, read_safetensors, write_safetensors};

/// The adapter's configuration file.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's weights file.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Rank, scale and target projections of an adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update.
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f64,
    /// Targeted projections in Hugging Face's names (`q_proj`, …, `down_proj`).
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// Parses targets given as `q,k,v,o` or `q_proj,gate_proj` (short names gain `_proj`).
    pub fn new(rank: usize, alpha: f64, targets: &str) -> Result<Self> {
        if rank == 0 {
            return Err(MlError::Config("LoRA rank must be at least 1".into()));
        }
        let targets: Vec<String> = targets
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                if t.ends_with("_proj") {
                    t.to_string()
                } else {
                    format!("{t}_proj")
                }
            })
            .collect();
        if targets.is_empty() {
            return Err(MlError::Config(
                "LoRA needs at least one target projection".into(),
            ));
        }
        if let Some(bad) = targets.iter().find(|t| !PROJECTIONS.contains(&t.as_str())) {
            return Err(MlError::Config(format!(
                "unknown LoRA target {bad}: choose from {}",
                PROJECTIONS.join(", ")
            )));
        }
        Ok(Self {
            rank,
            alpha,
            targets,
        })
    }

    fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// The `adapter_config.json` of PEFT, with the fields PEFT, vLLM and LoRAX read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// Always `CAUSAL_LM`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank.
    pub r: usize,
    /// Scale numerator.
    pub lora_alpha: f64,
    /// Dropout used in training (0 here).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Targeted module names.
    pub target_modules: Vec<String>,
    /// Bias training mode; only `none` is produced or accepted.
    #[serde(default = "none")]
    pub bias: String,
    /// Where the base model lives, informational.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Whether weights are stored transposed (never, for Llama).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Whether the adapter is for inference.
    #[serde(default)]
    pub inference_mode: bool,
    /// Whether the scale is `alpha / sqrt(r)`; unsupported.
    #[serde(default)]
    pub use_rslora: bool,
    /// Whether DoRA magnitudes are present; unsupported.
    #[serde(default)]
    pub use_dora: bool,
    /// Modules saved in full; unsupported.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Layers the adapter covers (all when absent).
    #[serde(default)]
    pub layers_to_transform: Option<Vec<usize>>,
    /// Per-module ranks; unsupported.
    #[serde(default)]
    pub rank_pattern: HashMap<String, usize>,
    /// Per-module alphas; unsupported.
    #[serde(default)]
    pub alpha_pattern: HashMap<String, f64>,
    /// Version of the PEFT format writer.
    #[serde(default)]
    pub peft_version: Option<String>,
}

fn none() -> String {
    "none".into()
}

/// A LoRA adapter: `A` (`rank × in`) and `B` (`out × rank`) for each targeted projection.
#[derive(Debug, Clone)]
pub struct Adapter {
    config: LoraConfig,
    /// `(layer, projection) → (A, B)`.
    weights: BTreeMap<(usize, String), (Tensor, Tensor)>,
}

impl Adapter {
    /// A fresh adapter as PEFT initialises one: `A` Kaiming-uniform, `B` zero, so the adapted model
    /// starts out equal to the base.
    pub fn init(
        model: &ModelConfig,
        config: LoraConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut weights = BTreeMap::new();
        for layer in 0..model.num_hidden_layers {
            for target in &config.targets {
                let (out, inp) = projection_shape(model, target);
                let bound = 1.0 / (inp as f32).sqrt();
                let uniform = Uniform::new(-bound, bound).expect("positive bound");
                let a: Vec<f32> = (0..config.rank * inp)
                    .map(|_| uniform.sample(&mut rng))
                    .collect();
                let a = Tensor::from_vec(a, (config.rank, inp), device)?;
                let b = Tensor::zeros((out, config.rank), candle_core::DType::F32, device)?;
                weights.insert((layer, target.clone()), (a, b));
            }
        }
        Ok(Self { config, weights })
    }

    /// The adapter's configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.weights
            .values()
            .map(|(a, b)| a.elem_count() + b.elem_count())
            .sum()
    }

    /// The adapted projections as `layer.projection`, in the order [`Adapter::make_trainable`]
    /// returns their `A` and `B`.
    pub fn group_names(&self) -> Vec<String> {
        self.weights
            .keys()
            .map(|(layer, target)| format!("{layer}.{target}"))
            .collect()
    }

    /// Turns every `A` and `B` into a training variable (`A` then `B` of each projection, in
    /// [`Adapter::group_names`] order); the adapter then reads their live values.
    pub fn make_trainable(&mut self) -> Result<Vec<Var>> {
        let mut vars = Vec::with_capacity(self.weights.len() * 2);
        for (a, b) in self.weights.values_mut() {
            for t in [a, b] {
                let var = Var::from_tensor(t)?;
                *t = var.as_tensor().clone();
                vars.push(var);
            }
        }
        Ok(vars)
    }

    /// Installs the adapter into `model`'s projections.
    pub fn apply(&self, model: &mut Llama) -> Result<()> {
        let scale = self.config.scale();
        for ((layer, target), (a, b)) in &self.weights {
            let linear = model.projection_mut(*layer, target).ok_or_else(|| {
                MlError::Input(format!(
                    "the model has no layer {layer} projection {target}"
                ))
            })?;
            linear.set_lora(Some(LoraWeights {
                a: a.clone(),
                b: b.clone(),
                scale,
            }));
        }
        Ok(())
    }

    /// The adapter's updates by layer and projection, as [`Llama::forward_batch`] reads them,
    /// with `B` pre-multiplied by the scale so that serving does not rescale it every step, and
    /// stored column by column (the multi-LoRA pass's layout) so that it is not rearranged on
    /// every step either.
    pub fn to_set(&self) -> Result<LoraSet> {
        let scale = self.config.scale();
        let mut set = LoraSet::default();
        for ((layer, target), (a, b)) in &self.weights {
            let projection = PROJECTIONS
                .iter()
                .position(|p| p == target)
                .expect("targets are checked on creation");
            let lora = LoraWeights {
                a: a.clone(),
                b: column_major(&(b * scale)?)?,
                scale: 1.0,
            };
            set.insert(*layer, projection, lora);
        }
        Ok(set)
    }

    /// Replaces every `B` (zero after [`Adapter::init`]) by seeded noise, so that tests see the
    /// adapter change the outputs.
    #[cfg(test)]
    pub(crate) fn randomize_b_for_tests(&mut self, seed: u64) -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = rand_distr::Normal::new(0.0f32, 0.5).expect("valid deviation");
        for (_, b) in self.weights.values_mut() {
            let noise: Vec<f32> = (0..b.elem_count())
                .map(|_| normal.sample(&mut rng))
                .collect();
            *b = Tensor::from_vec(noise, b.dims(), b.device())?;
        }
        Ok(())
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` in PEFT's format.
    pub fn save(&self, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| MlError::io(dir, e))?;
        let config = PeftConfig {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r: self.config.rank,
            lora_alpha: self.config.alpha,
            lora_dropout: 0.0,
            target_modules: self.config.targets.clone(),
            bias: none(),
            base_model_name_or_path: Some(base_model.into()),
            fan_in_fan_out: false,
            inference_mode: true,
            use_rslora: false,
            use_dora: false,
            modules_to_save: None,
            layers_to_transform: None,
            rank_pattern: HashMap::new(),
            alpha_pattern: HashMap::new(),
            peft_version: Some("0.13.2".into()),
        };
        let path = dir.join(ADAPTER_CONFIG_FILE);
        let text = serde_json::to_string_pretty(&config).expect("config serializes");
        std::fs::write(&path, text).map_err(|e| MlError::io(&path, e))?;
        let mut tensors = HashMap::new();
        for ((layer, target), (a, b)) in &self.weights {
            let key = peft_key(*layer, target);
            tensors.insert(format!("{key}.lora_A.weight"), a.clone());
            tensors.insert(format!("{key}.lora_B.weight"), b.clone());
        }
        write_safetensors(&dir.join(ADAPTER_WEIGHTS_FILE), &tensors)
    }

    /// Reads a PEFT adapter directory for a model of configuration `model`, checking every key and
    /// shape.
    pub fn load(dir: &Path, model: &ModelConfig, device: &Device) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG_FILE);
        if !path.is_file() {
            return Err(MlError::Missing {
                path,
                what: "a PEFT adapter needs adapter_config.json",
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| MlError::io(&path, e))?;
        let peft: PeftConfig = serde_json::from_str(&text).map_err(|source| MlError::Json {
            path: path.clone(),
            source,
        })?;
        check_supported(&peft)?;
        let config = LoraConfig::new(peft.r, peft.lora_alpha, &peft.target_modules.join(","))?;
        let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
        if !weights_path.is_file() {
            return Err(MlError::Missing {
                path: weights_path,
                what: "a PEFT adapter needs adapter_model.safetensors",
            });
        }
        let mut tensors = read_safetensors(&weights_path, device)?;
        let layers = peft
            .layers_to_transform
            .clone()
            .unwrap_or_else(|| (0..model.num_hidden_layers).collect());
        let mut weights = BTreeMap::new();
        for &layer in &layers {
            for target in &config.targets {
                let (out, inp) = projection_shape(model, target);
                let key = peft_key(layer, target);
                let a = take(
                    &mut tensors,
                    &format!("{key}.lora_A.weight"),
                    &[config.rank, inp],
                )?;
                let b = take(
                    &mut tensors,
                    &format!("{key}.lora_B.weight"),
                    &[out, config.rank],
                )?;
                weights.insert((layer, target.clone()), (a, b));
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(MlError::Input(format!(
                "adapter tensor {extra} does not belong to the configured targets"
            )));
        }
        Ok(Self { config, weights })
    }
}

/// The PEFT prefix of a projection: `base_model.model.model.layers.{layer}.{self_attn|mlp}.{target}`.
fn peft_key(layer: usize, target: &str) -> String {
    let block = if matches!(target, "gate_proj" | "up_proj" | "down_proj") {
        "mlp"
    } else {
        "self_attn"
    };
    format!("base_model.model.model.layers.{layer}.{block}.{target}")
}

/// `(out, in)` of a projection.
fn projection_shape(model: &ModelConfig, target: &str) -> (usize, usize) {
    let (h, f) = (model.hidden_size, model.intermediate_size);
    let kv = model.kv_heads() * model.head_dim();
    match target {
        "k_proj" | "v_proj" => (kv, h),
        "gate_proj" | "up_proj" => (f, h),
        "down_proj" => (h, f),
        _ => (h, h),
    }
}

fn take(tensors: &mut HashMap<String, Tensor>, name: &str, shape: &[usize]) -> Result<Tensor> {
    let tensor = tensors
        .remove(name)
        .ok_or_else(|| MlError::MissingTensor { name: name.into() })?;
    if tensor.dims() != shape {
        return Err(MlError::ShapeMismatch {
            name: name.into(),
            expected: shape.to_vec(),
            found: tensor.dims().to_vec(),
        });
    }
    Ok(tensor)
}

fn check_supported(peft: &PeftConfig) -> Result<()> {
    let unsupported = [
        (peft.peft_type != "LORA", "peft_type other than LORA"),
        (peft.use_rslora, "use_rslora"),
        (peft.use_dora, "use_dora"),
        (peft.fan_in_fan_out, "fan_in_fan_out"),
        (peft.bias != "none", "trained biases"),
        (
            peft.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()),
            "modules_to_save",
        ),
        (
            !peft.rank_pattern.is_empty() || !peft.alpha_pattern.is_empty(),
            "rank_pattern or alpha_pattern",
        ),
    ];
    match unsupported.iter().find(|(bad, _)| *bad) {
        Some((_, what)) => Err(MlError::Config(format!(
            "adapter uses {what}, which this engine does not support"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::random_weights;

    fn model() -> Result<Llama> {
        let config = ModelConfig::llama(64, 32, 2, 4, 2);
        Llama::new(config.clone(), &random_weights(&config, 11, &Device::Cpu)?)
    }

    fn logits(model: &Llama) -> Result<Vec<f32>> {
        let tokens = Tensor::new(&[[1u32, 2, 3, 4, 5, 6]], &Device::Cpu)?;
        Ok(model.forward(&tokens)?.flatten_all()?.to_vec1()?)
    }

    #[test]
    fn a_fresh_adapter_with_zero_b_leaves_the_base_outputs_unchanged() -> Result<()> {
        let base = model()?;
        let mut adapted = base.clone();
        let adapter = Adapter::init(
            base.config(),
            LoraConfig::new(8, 16.0, "q,k,v,o,gate,up,down")?,
            1,
            &Device::Cpu,
        )?;
        adapter.apply(&mut adapted)?;
        assert_eq!(logits(&base)?, logits(&adapted)?);
        Ok(())
    }

    #[test]
    fn a_saved_adapter_loads_back_to_bit_identical_logits() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let base = model()?;
        let mut adapter = Adapter::init(
            base.config(),
            LoraConfig::new(4, 8.0, "q,v")?,
            2,
            &Device::Cpu,
        )?;
        adapter.randomize_b_for_tests(2)?;
        adapter.save(dir.path(), "base")?;
        let loaded = Adapter::load(dir.path(), base.config(), &Device::Cpu)?;
        let (mut a, mut b) = (base.clone(), base.clone());
        adapter.apply(&mut a)?;
        loaded.apply(&mut b)?;
        assert_eq!(logits(&a)?, logits(&b)?);
        assert_ne!(
            logits(&a)?,
            logits(&base)?,
            "a non-zero B changes the outputs"
        );
        Ok(())
    }

    #[test]
    fn mismatched_adapters_are_refused() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let base = model()?;
        let adapter = Adapter::init(
            base.config(),
            LoraConfig::new(4, 8.0, "q")?,
            2,
            &Device::Cpu,
        )?;
        adapter.save(dir.path(), "base")?;
        let wider = ModelConfig::llama(64, 64, 2, 4, 2);
        let err = Adapter::load(dir.path(), &wider, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lora_A.weight has shape [4, 32], expected [4, 64]"),
            "{err}"
        );
        let err = LoraConfig::new(8, 16.0, "q,x").unwrap_err().to_string();
        assert!(err.contains("unknown LoRA target x_proj"), "{err}");
        Ok(())
    }
}
