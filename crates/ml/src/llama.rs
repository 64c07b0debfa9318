//! The Llama architecture: RMSNorm, rotary position embeddings, grouped-query attention and a
//! SwiGLU feed-forward layer, as Hugging Face's `LlamaForCausalLM` computes them, so that a
//! checkpoint trained there gives the same logits here.
//!
//! Every operation used has a backward pass in candle (the fused RMSNorm, softmax and RoPE kernels
//! do not), so the same forward serves training, gradient attribution and inference.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{MlError, Result};
use crate::frozen::frozen_linear;
use crate::fused::{self, RotaryTables};

/// Named weights in Hugging Face's naming, as a checkpoint stores them.
pub type Weights = HashMap<String, Tensor>;

/// A low-rank update `scale · B·A` added to a linear layer's output.
#[derive(Clone, Debug)]
pub struct LoraWeights {
    /// `rank × in`.
    pub a: Tensor,
    /// `out × rank`.
    pub b: Tensor,
    /// `alpha / rank`.
    pub scale: f64,
}

/// A linear layer `x·Wᵀ + b`, optionally with a LoRA update.
///
/// A weight that is not a training variable goes through [`frozen_linear`], so its gradient is
/// never computed.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: Option<LoraWeights>,
}

impl Linear {
    fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
        }
    }

    /// The `out × in` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Installs (or with `None` removes) a LoRA update.
    pub fn set_lora(&mut self, lora: Option<LoraWeights>) {
        self.lora = lora;
    }

    /// Applies the layer to `x` (`… × in`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (out, features) = self.weight.dims2()?;
        let mut shape = x.dims().to_vec();
        if shape.last() != Some(&features) {
            return Err(MlError::Input(format!(
                "linear layer of {features} inputs applied to {:?}",
                x.dims()
            )));
        }
        // Rows × features: plain 2-D products, whose backward has no broadcast to sum over.
        let x = x.contiguous()?.reshape(((), features))?;
        let mut y = if self.weight.track_op() {
            x.matmul(&self.weight.t()?)?
        } else {
            frozen_linear(&x, &self.weight)?
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(lora) = &self.lora {
            // Scaling the small `out × rank` factor rather than the `rows × out` product.
            let b = (&lora.b * lora.scale)?;
            y = (y + x.matmul(&lora.a.t()?)?.matmul(&b.t()?)?)?;
        }
        *shape.last_mut().expect("checked above") = out;
        Ok(y.reshape(shape)?)
    }
}

/// RMSNorm, one fused op forward and backward ([`fused::rms_norm`]).
#[derive(Clone, Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(fused::rms_norm(x, &self.weight, self.eps)?)
    }
}

/// Keys and values of the positions seen so far, one pair per layer.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryTables,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        offset: usize,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let split = |t: Tensor, heads: usize| -> Result<Tensor> {
            Ok(t.reshape((b, s, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = rope.apply(&split(self.q.forward(x)?, self.heads)?, offset)?;
        let mut k = rope.apply(&split(self.k.forward(x)?, self.kv_heads)?, offset)?;
        let mut v = split(self.v.forward(x)?, self.kv_heads)?;
        if let Some(cache) = cache {
            if let Some((pk, pv)) = cache.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *cache = Some((k.clone(), v.clone()));
        }
        // The query heads that share a key-value head are stacked along the sequence, so one
        // product per key-value head serves its group without copying keys and values.
        let group = self.heads / self.kv_heads;
        let keys = k.dim(2)?;
        let q = q.reshape((b, self.kv_heads, group * s, self.head_dim))?;
        let scores = q
            .matmul(&k.t()?)?
            .reshape((b, self.kv_heads, group, s, keys))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let probs = fused::causal_softmax(&scores, scale, offset)?.reshape((
            b,
            self.kv_heads,
            group * s,
            keys,
        ))?;
        let out = probs
            .matmul(&v)?
            .reshape((b, self.heads, s, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, s, self.heads * self.head_dim))?;
        self.o.forward(&out)
    }
}

#[derive(Clone, Debug)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = fused::swiglu(&self.gate.forward(x)?, &self.up.forward(x)?)?;
        self.down.forward(&hidden)
    }
}

#[derive(Clone, Debug)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: Mlp,
}

/// A Llama-family causal language model.
#[derive(Clone, Debug)]
pub struct Llama {
    config: ModelConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: RotaryTables,
}

/// The projections LoRA can target, in Hugging Face's module names.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl Llama {
    /// Builds the model from named weights, checking every name and shape against the config.
    pub fn new(config: ModelConfig, weights: &Weights) -> Result<Self> {
        config.validate()?;
        for (name, shape) in config.weight_shapes() {
            let tensor = weights
                .get(&name)
                .ok_or_else(|| MlError::MissingTensor { name: name.clone() })?;
            if tensor.dims() != shape.as_slice() {
                return Err(MlError::ShapeMismatch {
                    name,
                    expected: shape,
                    found: tensor.dims().to_vec(),
                });
            }
        }
        let get = |name: &str| weights[name].clone();
        let bias = |name: &str| config.qkv_bias().then(|| get(name));
        let norm = |name: &str| RmsNorm {
            weight: get(name),
            eps: config.rms_norm_eps,
        };
        let blocks = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let linear = |m: &str| Linear::new(get(&format!("{p}.{m}.weight")), None);
                let biased = |m: &str| {
                    Linear::new(
                        get(&format!("{p}.{m}.weight")),
                        bias(&format!("{p}.{m}.bias")),
                    )
                };
                Block {
                    attn_norm: norm(&format!("{p}.input_layernorm.weight")),
                    attn: Attention {
                        q: biased("self_attn.q_proj"),
                        k: biased("self_attn.k_proj"),
                        v: biased("self_attn.v_proj"),
                        o: linear("self_attn.o_proj"),
                        heads: config.num_attention_heads,
                        kv_heads: config.kv_heads(),
                        head_dim: config.head_dim(),
                    },
                    mlp_norm: norm(&format!("{p}.post_attention_layernorm.weight")),
                    mlp: Mlp {
                        gate: linear("mlp.gate_proj"),
                        up: linear("mlp.up_proj"),
                        down: linear("mlp.down_proj"),
                    },
                }
            })
            .collect();
        let embed = get("model.embed_tokens.weight");
        let head = if config.tie_word_embeddings {
            embed.clone()
        } else {
            get("lm_head.weight")
        };
        let rope = RotaryTables::new(
            config.head_dim(),
            config.max_position_embeddings,
            config.rope_theta,
        );
        Ok(Self {
            embed,
            blocks,
            norm: norm("model.norm.weight"),
            lm_head: Linear::new(head, None),
            rope,
            config,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// The linear layer `model.layers.{layer}.{self_attn|mlp}.{projection}`.
    pub fn projection_mut(&mut self, layer: usize, projection: &str) -> Option<&mut Linear> {
        let block = self.blocks.get_mut(layer)?;
        Some(match projection {
            "q_proj" => &mut block.attn.q,
            "k_proj" => &mut block.attn.k,
            "v_proj" => &mut block.attn.v,
            "o_proj" => &mut block.attn.o,
            "gate_proj" => &mut block.mlp.gate,
            "up_proj" => &mut block.mlp.up,
            "down_proj" => &mut block.mlp.down,
            _ => return None,
        })
    }

    /// Logits (`batch × seq × vocab`) for token ids (`batch × seq`, u32), without a cache.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden(tokens, None)?;
        self.lm_head.forward(&hidden)
    }

    /// Logits of the last position only (`batch × vocab`), extending `cache` with the new tokens.
    pub fn forward_cached(&self, tokens: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.hidden(tokens, Some(cache))?;
        let seq = hidden.dim(1)?;
        self.lm_head
            .forward(&hidden.narrow(1, seq - 1, 1)?.squeeze(1)?)
    }

    fn hidden(&self, tokens: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, s) = tokens.dims2()?;
        if s == 0 {
            return Err(MlError::Input("empty token sequence".into()));
        }
        let offset = cache.as_ref().map_or(0, |c| c.len());
        if let Some(cache) = cache.as_mut() {
            cache.layers.resize(self.blocks.len(), None);
        }
        let mut x = self.embed.embedding(&tokens.flatten_all()?)?.reshape((
            b,
            s,
            self.config.hidden_size,
        ))?;
        if offset + s > self.rope.positions() {
            return Err(MlError::Input(format!(
                "sequence of {} positions exceeds max_position_embeddings {}",
                offset + s,
                self.rope.positions()
            )));
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|c| &mut c.layers[i]);
            let attn = block.attn.forward(
                &block.attn_norm.forward(&x)?,
                &self.rope,
                layer_cache,
                offset,
            )?;
            x = (x + attn)?;
            x = (&x + block.mlp.forward(&block.mlp_norm.forward(&x)?)?)?;
        }
        self.norm.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::random_weights;

    #[test]
    fn the_kv_cache_gives_the_logits_of_a_full_forward() -> Result<()> {
        let config = ModelConfig::llama(50, 32, 2, 4, 2);
        let model = Llama::new(config.clone(), &random_weights(&config, 5, &Device::Cpu)?)?;
        let ids = [3u32, 17, 8, 42, 1, 9];
        let full = model.forward(&Tensor::new(&ids[..], &Device::Cpu)?.unsqueeze(0)?)?;
        let mut cache = KvCache::default();
        model.forward_cached(
            &Tensor::new(&ids[..3], &Device::Cpu)?.unsqueeze(0)?,
            &mut cache,
        )?;
        for (i, &id) in ids.iter().enumerate().skip(3) {
            let step = model.forward_cached(&Tensor::new(&[[id]], &Device::Cpu)?, &mut cache)?;
            let want = full.narrow(1, i, 1)?.squeeze(1)?;
            let diff = (step - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "position {i} differs by {diff}");
        }
        assert_eq!(cache.len(), ids.len());
        Ok(())
    }

    #[test]
    fn sequences_longer_than_the_position_table_are_refused() -> Result<()> {
        let mut config = ModelConfig::llama(50, 32, 1, 4, 4);
        config.max_position_embeddings = 4;
        let model = Llama::new(config.clone(), &random_weights(&config, 5, &Device::Cpu)?)?;
        let err = model
            .forward(&Tensor::new(&[[1u32, 2, 3, 4, 5]], &Device::Cpu)?)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: sequence of 5 positions exceeds max_position_embeddings 4"
        );
        Ok(())
    }
}
