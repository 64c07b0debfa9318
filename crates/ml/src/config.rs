//! The model configuration, read from and written to a Hugging Face `config.json`.
//!
//! Only the fields the Llama family shares are modelled; unknown fields in a user's checkpoint are
//! ignored on load, so a SmolLM, Llama or Qwen2 config.json is accepted as it is.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};

/// The `model_type` values whose checkpoints this engine loads.
pub const SUPPORTED_MODEL_TYPES: &str = "llama, mistral, qwen2";

/// The linear projections of a decoder block, in Hugging Face's module names: the ones LoRA can
/// target, in the order adapters' updates are kept by.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Hyper-parameters of a Llama-style decoder, in Hugging Face's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: String,
    /// The class name Hugging Face records, e.g. `LlamaForCausalLM`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Vocabulary size, rows of the embedding table.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Epsilon of RMSNorm.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary position embedding.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Longest sequence the position table covers.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Whether the output projection reuses the embedding table.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether q, k and v projections carry a bias (Qwen2 always does).
    #[serde(default)]
    pub attention_bias: bool,
    /// Token that starts a sequence.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// Token that ends a sequence.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// The dtype of the weights on disk, informational.
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_max_positions() -> usize {
    2048
}

impl ModelConfig {
    /// A Llama configuration with the given shape and the family's defaults elsewhere.
    pub fn llama(
        vocab_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
    ) -> Self {
        Self {
            model_type: "llama".into(),
            architectures: vec!["LlamaForCausalLM".into()],
            vocab_size,
            hidden_size,
            intermediate_size: swiglu_width(hidden_size),
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            rms_norm_eps: default_eps(),
            rope_theta: default_rope_theta(),
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            attention_bias: false,
            bos_token_id: None,
            eos_token_id: None,
            torch_dtype: Some("float32".into()),
        }
    }

    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MlError::io(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|source| MlError::Json {
            path: path.into(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Writes `config.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("config serializes");
        std::fs::write(path, text).map_err(|e| MlError::io(path, e))
    }

    /// Checks the architecture and that the head counts divide the widths.
    pub fn validate(&self) -> Result<()> {
        if !SUPPORTED_MODEL_TYPES
            .split(", ")
            .any(|t| t == self.model_type)
        {
            return Err(MlError::UnknownArchitecture {
                found: self.model_type.clone(),
                supported: SUPPORTED_MODEL_TYPES,
            });
        }
        let heads = self.num_attention_heads;
        if heads == 0 || !self.hidden_size.is_multiple_of(heads) {
            return Err(MlError::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {heads}",
                self.hidden_size
            )));
        }
        let kv = self.kv_heads();
        if kv == 0 || !heads.is_multiple_of(kv) {
            return Err(MlError::Config(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(MlError::Config(format!(
                "head dimension {} must be even for RoPE",
                self.head_dim()
            )));
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            return Err(MlError::Config(
                "vocab_size, num_hidden_layers and intermediate_size must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Key/value heads, defaulting to the query heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether q, k and v carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// The shape of every weight the configuration implies, in Hugging Face's names.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.kv_heads() * self.head_dim();
        let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for i in 0..self.num_hidden_layers {
            let p = format!("model.layers.{i}");
            for (name, shape) in [
                ("self_attn.q_proj.weight", vec![h, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, h]),
                ("mlp.gate_proj.weight", vec![f, h]),
                ("mlp.up_proj.weight", vec![f, h]),
                ("mlp.down_proj.weight", vec![h, f]),
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
            ] {
                shapes.push((format!("{p}.{name}"), shape));
            }
            if self.qkv_bias() {
                shapes.push((format!("{p}.self_attn.q_proj.bias"), vec![h]));
                shapes.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
                shapes.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
            }
        }
        shapes.push(("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            shapes.push(("lm_head.weight".into(), vec![v, h]));
        }
        shapes
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.weight_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// The SwiGLU width Llama uses for a given hidden size: 8/3 of it, rounded up to a multiple of 32.
pub fn swiglu_width(hidden: usize) -> usize {
    (hidden * 8 / 3).div_ceil(32) * 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_hugging_face_config_and_ignores_unknown_fields() {
        let json = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":49152,
            "hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,
            "num_key_value_heads":3,"rms_norm_eps":1e-05,"rope_theta":10000.0,"tie_word_embeddings":true,
            "max_position_embeddings":2048,"rope_scaling":null,"use_cache":true}"#;
        let config: ModelConfig = serde_json::from_str(json).unwrap();
        config.validate().unwrap();
        assert_eq!(config.head_dim(), 64);
        assert_eq!(config.kv_heads(), 3);
        assert_eq!(
            config.parameter_count(),
            134_515_008,
            "SmolLM-135M's published size"
        );
    }

    #[test]
    fn rejects_other_architectures_and_bad_head_counts() {
        let mut config = ModelConfig::llama(256, 64, 2, 4, 2);
        config.model_type = "gpt2".into();
        assert!(matches!(
            config.validate(),
            Err(MlError::UnknownArchitecture { .. })
        ));
        let mut config = ModelConfig::llama(256, 64, 2, 4, 3);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("num_key_value_heads 3")
        );
        config.num_key_value_heads = Some(2);
        config.num_attention_heads = 5;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("not a multiple of num_attention_heads")
        );
    }
}
