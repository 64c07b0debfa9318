//! The Llama architecture: RMSNorm, rotary position embeddings, grouped-query attention and a
//! SwiGLU feed-forward layer, as Hugging Face's `LlamaForCausalLM` computes them, so that a
//! checkpoint trained there gives the same logits here.
//!
//! Every operation used has a backward pass in candle (the fused RMSNorm, softmax and RoPE kernels
//! do not), so the same forward serves training, gradient attribution and inference.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use candle_core::{Device, Tensor};

use crate::attention::attention;
use crate::config::ModelConfig;
use crate::error::{MlError, Result};
use crate::frozen::frozen_linear;
use crate::fused::{self, RotaryTables};
pub use crate::kv_cache::KvCache;
use crate::kv_cache::{self, Heads, SeqRows};
use crate::lora::LoraSet;
pub use crate::multi_lora::{self, RowDelta};

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
            y = (y + lora.delta(&x)?)?;
        }
        *shape.last_mut().expect("checked above") = out;
        Ok(y.reshape(shape)?)
    }

    /// Applies the layer to the rows of `x` (`rows × in`), adding each of `deltas`' updates to its
    /// own rows only: one base product for a batch whose sequences use different adapters.
    pub fn forward_rows(&self, x: &Tensor, deltas: &[RowDelta<'_>]) -> Result<Tensor> {
        let y = self.forward(x)?;
        if deltas.is_empty() {
            return Ok(y);
        }
        multi_lora::add_deltas(x, &y, deltas)
    }
}

impl LoraWeights {
    /// `x·Aᵀ·(scale·B)ᵀ` for rows `x`, scaling the small `out × rank` factor rather than the
    /// `rows × out` product.
    fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let down = x.matmul(&self.a.t()?)?;
        Ok(if self.scale == 1.0 {
            down.matmul(&self.b.t()?)?
        } else {
            down.matmul(&(&self.b * self.scale)?.t()?)?
        })
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
    /// Attention of `b × s` positions in training (differentiable; no cache).
    fn forward(&self, x: &Tensor, rope: &RotaryTables) -> Result<Tensor> {
        let [q, k, v] = [&self.q, &self.k, &self.v].map(|p| p.forward(x));
        let out = attention(&q?, &k?, &v?, self.shape(), rope)?;
        self.o.forward(&out)
    }

    fn shape(&self) -> Heads {
        Heads {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }
}

/// The updates of `projection` in `layer` for each run of consecutive sequences that share an
/// adapter.
fn row_deltas<'a>(
    adapters: &[Option<&'a LoraSet>],
    rows: &[Range<usize>],
    layer: usize,
    projection: usize,
) -> Vec<RowDelta<'a>> {
    let mut deltas: Vec<RowDelta<'a>> = Vec::new();
    for (adapter, r) in adapters.iter().zip(rows) {
        let Some(lora) = adapter.and_then(|a| a.get(layer, projection)) else {
            continue;
        };
        match deltas.last_mut() {
            Some(last) if std::ptr::eq(last.lora, lora) && last.rows.end == r.start => {
                last.rows.end = r.end;
            }
            _ => deltas.push(RowDelta {
                rows: r.clone(),
                lora,
            }),
        }
    }
    deltas
}

#[derive(Clone, Debug)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_rows(x, &|_| Vec::new())
    }

    /// The layer with the row updates `deltas(projection)` (indexes into [`PROJECTIONS`]).
    fn forward_rows<'a>(
        &self,
        x: &Tensor,
        deltas: &dyn Fn(usize) -> Vec<RowDelta<'a>>,
    ) -> Result<Tensor> {
        let gate = self.gate.forward_rows(x, &deltas(GATE))?;
        let hidden = fused::swiglu(&gate, &self.up.forward_rows(x, &deltas(UP))?)?;
        self.down.forward_rows(&hidden, &deltas(DOWN))
    }
}

// Positions of the projections in [`PROJECTIONS`].
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// One sequence's part in a batched step ([`Llama::forward_batch`]).
pub struct BatchSeq<'a> {
    /// The new tokens: a chunk of the prompt, or the token sampled last.
    pub tokens: &'a [u32],
    /// The sequence's keys and values so far, extended by the step.
    pub cache: &'a mut KvCache,
    /// The adapter the sequence runs with, if any.
    pub adapter: Option<&'a LoraSet>,
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

/// `w` (`rows × columns`) with the same shape and values, stored column by column: its transpose
/// is contiguous, the layout the inference kernels read.
pub(crate) fn column_major(w: &Tensor) -> Result<Tensor> {
    Ok(w.t()?.contiguous()?.t()?)
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

    /// The model with its projection weights laid out for inference, each one's transpose
    /// (`in × out`) contiguous in memory. A product `x·Wᵀ` then hands the matrix kernels `Wᵀ` row
    /// by row, which they read as is, where the checkpoint's layout makes them gather the whole
    /// weight into their own layout again on every call, element by element: on the dev model
    /// that gathering took a fifth of a serving step. Training keeps the checkpoint's layout,
    /// which its backward product `dy·W` reads as is. With tied embeddings the embedding table
    /// takes the head's layout too, so the weight stays one copy; a token's row is then read
    /// with a stride, a few hundred values per token.
    pub fn for_inference(mut self) -> Result<Self> {
        for block in &mut self.blocks {
            let (attn, mlp) = (&mut block.attn, &mut block.mlp);
            for linear in [
                &mut attn.q,
                &mut attn.k,
                &mut attn.v,
                &mut attn.o,
                &mut mlp.gate,
                &mut mlp.up,
                &mut mlp.down,
            ] {
                linear.weight = column_major(&linear.weight)?;
            }
        }
        let head = column_major(&self.lm_head.weight)?;
        if self.config.tie_word_embeddings {
            self.embed = head.clone();
        }
        self.lm_head.weight = head;
        Ok(self)
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
        let hidden = self.hidden(tokens)?;
        self.lm_head.forward(&hidden)
    }

    /// Logits of the last position only (`1 × vocab`) of one sequence's new tokens (`1 × seq`),
    /// extending `cache` with them.
    pub fn forward_cached(&self, tokens: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, _) = tokens.dims2()?;
        if b != 1 {
            return Err(MlError::Input(format!(
                "a cache holds one sequence, not a batch of {b}: use forward_batch"
            )));
        }
        let tokens: Vec<u32> = tokens.squeeze(0)?.to_vec1()?;
        self.forward_batch(&mut [BatchSeq {
            tokens: &tokens,
            cache,
            adapter: None,
        }])
    }

    /// One step for a batch of sequences, each with its own cache, length and adapter: the base
    /// projections run once over all their rows, each adapter's update only over its sequences'
    /// rows, and attention over each sequence's own cache. Returns the logits of each sequence's
    /// last new position (`sequences × vocab`).
    pub fn forward_batch(&self, seqs: &mut [BatchSeq<'_>]) -> Result<Tensor> {
        let vocab = self.config.vocab_size;
        let logits = Mutex::new(vec![0f32; seqs.len() * vocab]);
        self.forward_batch_with(seqs, &|i, row| {
            let mut logits = logits.lock().expect("no panic while copying logits");
            logits[i * vocab..][..vocab].copy_from_slice(row);
        })?;
        let logits = logits.into_inner().expect("no panic while copying logits");
        Ok(Tensor::from_vec(
            logits,
            (seqs.len(), vocab),
            self.device(),
        )?)
    }

    /// [`Self::forward_batch`], handing each sequence's logits to `then` (with its index in
    /// `seqs`) on the worker that computed them, as soon as its half of the batch is done. A
    /// server samples and streams one half's next tokens there while the other half computes,
    /// rather than after the step on one thread while the workers wait.
    pub fn forward_batch_with(
        &self,
        seqs: &mut [BatchSeq<'_>],
        then: &(dyn Fn(usize, &[f32]) + Sync),
    ) -> Result<()> {
        // A step is a few dozen ops that each split their work over rayon's workers. Called from
        // outside the pool, each op would be handed to it and waited for, a hand-off that costs
        // more than a small model's op; run on a worker, the ops share their work directly.
        rayon::scope(|_| self.step_in_halves(seqs, then))
    }

    /// [`Self::step`] for each half of the batch (by rows), side by side. One stream of ops leaves
    /// workers idle at the end of every op, waiting for the slowest part of it, and on a small
    /// model those gaps cost as much as the arithmetic; with two independent streams a worker
    /// idle in one finds work in the other. Rows do not interact, so the halves compute what one
    /// step would.
    fn step_in_halves(
        &self,
        seqs: &mut [BatchSeq<'_>],
        then: &(dyn Fn(usize, &[f32]) + Sync),
    ) -> Result<()> {
        if seqs.len() < 2 {
            return self.step_then(seqs, 0, then);
        }
        let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let mut rows = 0;
        let before_middle = seqs
            .iter()
            .take_while(|s| {
                rows += s.tokens.len();
                rows * 2 < total
            })
            .count();
        let half = (before_middle + 1).min(seqs.len() - 1);
        let (left, right) = seqs.split_at_mut(half);
        let (left, right) = rayon::join(
            || self.step_then(left, 0, then),
            || self.step_then(right, half, then),
        );
        left.and(right)
    }

    /// [`Self::step`], then `then` for each sequence's logits, the first sequence numbered `first`.
    fn step_then(
        &self,
        seqs: &mut [BatchSeq<'_>],
        first: usize,
        then: &(dyn Fn(usize, &[f32]) + Sync),
    ) -> Result<()> {
        let logits: Vec<f32> = self.step(seqs)?.flatten_all()?.to_vec1()?;
        for (i, row) in logits.chunks_exact(logits.len() / seqs.len()).enumerate() {
            then(first + i, row);
        }
        Ok(())
    }

    fn step(&self, seqs: &mut [BatchSeq<'_>]) -> Result<Tensor> {
        if seqs.is_empty() {
            return Err(MlError::Input("empty batch".into()));
        }
        let (mut ids, mut rows) = (Vec::new(), Vec::new());
        for seq in seqs.iter() {
            if seq.tokens.is_empty() {
                return Err(MlError::Input("empty token sequence".into()));
            }
            self.check_positions(seq.cache.len() + seq.tokens.len())?;
            rows.push(ids.len()..ids.len() + seq.tokens.len());
            ids.extend_from_slice(seq.tokens);
        }
        let adapters: Vec<Option<&LoraSet>> = seqs.iter().map(|s| s.adapter).collect();
        let mut parts: Vec<SeqRows> = seqs
            .iter_mut()
            .zip(&rows)
            .map(|(seq, rows)| SeqRows {
                rows: rows.clone(),
                queries: rows.clone(),
                cache: &mut *seq.cache,
            })
            .collect();
        let mut x = self.embedding(&Tensor::new(ids.as_slice(), self.device())?)?;
        let mut queries = rows.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            let mut h = block.attn_norm.forward(&x)?;
            let [k, v] = [(K, &block.attn.k), (V, &block.attn.v)]
                .map(|(p, linear)| linear.forward_rows(&h, &row_deltas(&adapters, &rows, i, p)));
            if i + 1 == self.blocks.len() && rows.len() < ids.len() {
                // The last layer's output is read at each sequence's last position only, for its
                // logits: a prompt's other positions need their keys and values, nothing more.
                let last: Vec<u32> = rows.iter().map(|r| r.end as u32 - 1).collect();
                let last = Tensor::new(last.as_slice(), self.device())?;
                (x, h) = (x.index_select(&last, 0)?, h.index_select(&last, 0)?);
                queries = (0..rows.len()).map(|s| s..s + 1).collect();
                for (part, queries) in parts.iter_mut().zip(&queries) {
                    part.queries = queries.clone();
                }
            }
            let deltas = |projection: usize| row_deltas(&adapters, &queries, i, projection);
            let q = block.attn.q.forward_rows(&h, &deltas(Q))?;
            let qkv = [&q, &k?, &v?];
            let out = kv_cache::attend(block.attn.shape(), &self.rope, i, qkv, &mut parts)?;
            x = (x + block.attn.o.forward_rows(&out, &deltas(O))?)?;
            x = (&x
                + block
                    .mlp
                    .forward_rows(&block.mlp_norm.forward(&x)?, &deltas)?)?;
        }
        for part in parts {
            part.cache.advance(part.rows.len());
        }
        self.lm_head.forward(&self.norm.forward(&x)?)
    }

    /// The embeddings of token ids (a vector), from a table in either layout (see
    /// [`Self::for_inference`]).
    fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(if self.embed.is_contiguous() {
            self.embed.embedding(ids)?
        } else {
            self.embed.t()?.index_select(ids, 1)?.t()?.contiguous()?
        })
    }

    fn check_positions(&self, positions: usize) -> Result<()> {
        if positions > self.rope.positions() {
            return Err(MlError::Input(format!(
                "sequence of {positions} positions exceeds max_position_embeddings {}",
                self.rope.positions()
            )));
        }
        Ok(())
    }

    fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, s) = tokens.dims2()?;
        if s == 0 {
            return Err(MlError::Input("empty token sequence".into()));
        }
        let mut x =
            self.embedding(&tokens.flatten_all()?)?
                .reshape((b, s, self.config.hidden_size))?;
        self.check_positions(s)?;
        for block in &self.blocks {
            x = (&x
                + block
                    .attn
                    .forward(&block.attn_norm.forward(&x)?, &self.rope)?)?;
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
        // A prefill of 48 positions is enough work for the parallel attention path.
        let ids: Vec<u32> = (0..52).map(|i| (i * 7 + 3) % 50).collect();
        let prefill = 48;
        let full = model.forward(&Tensor::new(&ids[..], &Device::Cpu)?.unsqueeze(0)?)?;
        let mut cache = KvCache::default();
        let first = model.forward_cached(
            &Tensor::new(&ids[..prefill], &Device::Cpu)?.unsqueeze(0)?,
            &mut cache,
        )?;
        let want = full.narrow(1, prefill - 1, 1)?.squeeze(1)?;
        let diff = (first - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "the prefill's last position differs by {diff}");
        for (i, &id) in ids.iter().enumerate().skip(prefill) {
            let step = model.forward_cached(&Tensor::new(&[[id]], &Device::Cpu)?, &mut cache)?;
            let want = full.narrow(1, i, 1)?.squeeze(1)?;
            let diff = (step - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "position {i} differs by {diff}");
        }
        assert_eq!(cache.len(), ids.len());
        Ok(())
    }

    #[test]
    fn the_inference_layout_gives_the_same_logits() -> Result<()> {
        for tied in [true, false] {
            let mut config = ModelConfig::llama(50, 32, 2, 4, 2);
            config.tie_word_embeddings = tied;
            let weights = random_weights(&config, 9, &Device::Cpu)?;
            let model = Llama::new(config.clone(), &weights)?;
            let served = Llama::new(config, &weights)?.for_inference()?;
            let ids = Tensor::new(&[[3u32, 14, 15, 9, 26, 5]], &Device::Cpu)?;
            let diff = (model.forward(&ids)? - served.forward(&ids)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5, "tied {tied}: full forward differs by {diff}");
            let [mut a, mut b] = [KvCache::default(), KvCache::default()];
            let (mine, theirs) = (
                model.forward_cached(&ids, &mut a)?,
                served.forward_cached(&ids, &mut b)?,
            );
            let diff = (mine - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "tied {tied}: cached forward differs by {diff}");
        }
        Ok(())
    }

    #[test]
    fn a_mixed_adapter_batch_gives_each_sequence_its_own_logits() -> Result<()> {
        use crate::lora::{Adapter, LoraConfig};
        let config = ModelConfig::llama(50, 32, 2, 4, 2);
        let base = Llama::new(config.clone(), &random_weights(&config, 5, &Device::Cpu)?)?;
        let adapter = |seed, targets| -> Result<Adapter> {
            let mut a = Adapter::init(
                &config,
                LoraConfig::new(4, 8.0, targets)?,
                seed,
                &Device::Cpu,
            )?;
            a.randomize_b_for_tests(seed)?;
            Ok(a)
        };
        let (a1, a2) = (adapter(1, "q,k,v,o")?, adapter(2, "v,gate,up,down")?);
        let (s1, s2) = (a1.to_set()?, a2.to_set()?);
        // Two sequences on a1 (adjacent, so they share one product), one on a2, one on the base.
        let prompts: [&[u32]; 4] = [&[3, 17, 8], &[4, 4, 9, 30, 2], &[7], &[11, 12]];
        let sets = [Some(&s1), Some(&s1), Some(&s2), None];
        let models = [&a1, &a1, &a2].map(|a| {
            let mut m = base.clone();
            a.apply(&mut m).map(|_| m)
        });
        let singles: Vec<&Llama> = models
            .iter()
            .map(|m| m.as_ref().unwrap())
            .chain([&base])
            .collect();
        let mut caches = vec![KvCache::default(); 4];
        let mut inputs: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
        let mut histories = inputs.clone();
        for _ in 0..3 {
            let mut seqs: Vec<BatchSeq> = inputs
                .iter()
                .zip(caches.iter_mut())
                .zip(sets)
                .map(|((t, cache), adapter)| BatchSeq {
                    tokens: t,
                    cache,
                    adapter,
                })
                .collect();
            let batched = base.forward_batch(&mut seqs)?;
            for (j, model) in singles.iter().enumerate() {
                // The reference: the whole history through the training path, no cache.
                let history = Tensor::new(histories[j].as_slice(), &Device::Cpu)?.unsqueeze(0)?;
                let want = model.forward(&history)?.squeeze(0)?;
                let want = want.get(histories[j].len() - 1)?;
                let diff = (batched.get(j)? - want)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert!(diff < 1e-5, "sequence {j} differs by {diff}");
                inputs[j] = vec![(j as u32 * 7 + caches[j].len() as u32) % 50];
                histories[j].extend(&inputs[j]);
            }
        }
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
