//! The Llama architecture: RMSNorm, rotary position embeddings, grouped-query attention and a
//! SwiGLU feed-forward layer, as Hugging Face's `LlamaForCausalLM` computes them, so that a
//! checkpoint trained there gives the same logits here.
//!
//! Every operation used has a backward pass in candle (the fused RMSNorm, softmax and RoPE kernels
//! do not), so the same forward serves training, gradient attribution and inference.

use std::ops::Range;

use candle_core::{Device, Tensor};

use crate::attention::attention;
use crate::config::ModelConfig;
use crate::error::{MlError, Result};
use crate::fused::{self, RotaryTables};
pub use crate::kv_cache::KvCache;
use crate::kv_cache::{self, Heads, SeqRows};
pub use crate::linear::Linear;
use crate::multi_lora::{LoraSet, RowDelta, row_deltas};
use crate::quant::{Matrix, QWeights};
use crate::weights::{Weights, WeightsAt};

/// RMSNorm, one fused op forward and backward ([`fused::rms_norm`]).
#[derive(Clone, Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(w: &WeightsAt<'_>, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get("weight")?,
            eps,
        })
    }

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
    fn load(w: &WeightsAt<'_>, config: &ModelConfig) -> Result<Self> {
        let biased = |name| Linear::load(&w.pp(name), config.qkv_bias());
        Ok(Self {
            q: biased("q_proj")?,
            k: biased("k_proj")?,
            v: biased("v_proj")?,
            o: Linear::load(&w.pp("o_proj"), false)?,
            heads: config.num_attention_heads,
            kv_heads: config.kv_heads(),
            head_dim: config.head_dim(),
        })
    }

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

#[derive(Clone, Debug)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(w: &WeightsAt<'_>) -> Result<Self> {
        let linear = |name| Linear::load(&w.pp(name), false);
        Ok(Self {
            gate: linear("gate_proj")?,
            up: linear("up_proj")?,
            down: linear("down_proj")?,
        })
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

// Positions of the projections in [`PROJECTIONS`](crate::config::PROJECTIONS).
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

impl Block {
    fn load(w: &WeightsAt<'_>, config: &ModelConfig) -> Result<Self> {
        let eps = config.rms_norm_eps;
        Ok(Self {
            attn_norm: RmsNorm::load(&w.pp("input_layernorm"), eps)?,
            attn: Attention::load(&w.pp("self_attn"), config)?,
            mlp_norm: RmsNorm::load(&w.pp("post_attention_layernorm"), eps)?,
            mlp: Mlp::load(&w.pp("mlp"))?,
        })
    }

    /// The layer, `x + attn(norm(x))` then `x + mlp(norm(x))`, with attention computed by
    /// `attend` from the normed input, and the feed-forward's rows updated by `deltas`
    /// ([`Mlp::forward_rows`]). Training and serving differ only in those two.
    fn forward<'a>(
        &self,
        x: &Tensor,
        attend: impl FnOnce(&Tensor) -> Result<Tensor>,
        deltas: &dyn Fn(usize) -> Vec<RowDelta<'a>>,
    ) -> Result<Tensor> {
        let x = (x + attend(&self.attn_norm.forward(x)?)?)?;
        let mlp = self.mlp.forward_rows(&self.mlp_norm.forward(&x)?, deltas)?;
        Ok((x + mlp)?)
    }
}

/// A Llama-family causal language model.
#[derive(Clone, Debug)]
pub struct Llama {
    config: ModelConfig,
    embed: Matrix,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: RotaryTables,
}

impl Llama {
    /// Builds the model from named weights, checking every name and shape against the config.
    pub fn new(config: ModelConfig, weights: &Weights) -> Result<Self> {
        Self::load(config, weights, None)
    }

    /// Builds the model from named weights of which those in `quantized` stay in their blocks
    /// (see [`crate::quant`]), checking every name and shape against the config.
    pub fn new_quantized(
        config: ModelConfig,
        weights: &Weights,
        quantized: &QWeights,
    ) -> Result<Self> {
        Self::load(config, weights, Some(quantized))
    }

    fn load(config: ModelConfig, weights: &Weights, quantized: Option<&QWeights>) -> Result<Self> {
        config.validate()?;
        for (name, shape) in config.weight_shapes() {
            let dims = match (weights.get(&name), quantized.and_then(|q| q.get(&name))) {
                (Some(t), _) => t.dims(),
                (None, Some(q)) => q.shape().dims(),
                (None, None) => return Err(MlError::MissingTensor { name }),
            };
            if dims != shape.as_slice() {
                return Err(MlError::ShapeMismatch {
                    name,
                    expected: shape,
                    found: dims.to_vec(),
                });
            }
        }
        let w = WeightsAt::new(weights, quantized);
        let blocks = (0..config.num_hidden_layers)
            .map(|i| Block::load(&w.pp(format!("model.layers.{i}")), &config))
            .collect::<Result<_>>()?;
        let embed = w.matrix("model.embed_tokens.weight")?;
        let lm_head = if config.tie_word_embeddings {
            Linear::of(embed.clone())
        } else {
            Linear::load(&w.pp("lm_head"), false)?
        };
        let rope = RotaryTables::new(
            config.head_dim(),
            config.max_position_embeddings,
            config.rope_theta,
        );
        Ok(Self {
            embed,
            blocks,
            norm: RmsNorm::load(&w.pp("model.norm"), config.rms_norm_eps)?,
            lm_head,
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
                linear.lay_out_for_inference()?;
            }
        }
        self.lm_head.lay_out_for_inference()?;
        if self.config.tie_word_embeddings {
            self.embed = self.lm_head.weight().clone();
        }
        Ok(self)
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.norm.weight.device()
    }

    /// Bytes the weights take in memory (a tied head counted once).
    pub fn size_in_bytes(&self) -> usize {
        let linears = self.blocks.iter().flat_map(|b| {
            [
                &b.attn.q,
                &b.attn.k,
                &b.attn.v,
                &b.attn.o,
                &b.mlp.gate,
                &b.mlp.up,
                &b.mlp.down,
            ]
        });
        let head = (!self.config.tie_word_embeddings).then_some(&self.lm_head);
        self.embed.size_in_bytes()
            + linears
                .chain(head)
                .map(|l| l.weight().size_in_bytes())
                .sum::<usize>()
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
        let mut x = self.embed(tokens)?;
        for layer in 0..self.blocks.len() {
            x = self.layer(layer, &x)?;
        }
        self.head(&x)
    }

    /// The first layer's input (`batch × seq × hidden`) for token ids (`batch × seq`, u32): with
    /// [`Self::layer`] and [`Self::head`], the steps of [`Self::forward`], for a caller that
    /// keeps only some of their activations (gradient checkpointing recomputes the rest).
    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, s) = tokens.dims2()?;
        if s == 0 {
            return Err(MlError::Input("empty token sequence".into()));
        }
        self.check_positions(s)?;
        self.embedding(&tokens.flatten_all()?)?
            .reshape((b, s, self.config.hidden_size))
            .map_err(Into::into)
    }

    /// Decoder layer `layer`'s output for its input `x` (`batch × seq × hidden`).
    pub fn layer(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        let block = self.blocks.get(layer).ok_or_else(|| {
            MlError::Input(format!("no layer {layer} in {} layers", self.blocks.len()))
        })?;
        block.forward(x, |h| block.attn.forward(h, &self.rope), &|_| Vec::new())
    }

    /// Logits for the last layer's output `x` (any leading dimensions, `hidden` last).
    pub fn head(&self, x: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(&self.norm.forward(x)?)
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
        // A step is a few dozen ops that each split their work over rayon's workers. Called from
        // outside the pool, each op would be handed to it and waited for, a hand-off that costs
        // more than a small model's op; run on a worker, the ops share their work directly.
        rayon::scope(|_| self.step(seqs))
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
            let key_values = |h: &Tensor, rows: &[Range<usize>]| {
                [(K, &block.attn.k), (V, &block.attn.v)]
                    .map(|(p, linear)| linear.forward_rows(h, &row_deltas(&adapters, rows, i, p)))
            };
            let mut last_layer_kv = None;
            if i + 1 == self.blocks.len() && rows.len() < ids.len() {
                // The last layer's output is read at each sequence's last position only, for its
                // logits: a prompt's other positions need their keys and values, nothing more.
                last_layer_kv = Some(key_values(&block.attn_norm.forward(&x)?, &rows));
                let last: Vec<u32> = rows.iter().map(|r| r.end as u32 - 1).collect();
                x = x.index_select(&Tensor::new(last.as_slice(), self.device())?, 0)?;
                queries = (0..rows.len()).map(|s| s..s + 1).collect();
                for (part, queries) in parts.iter_mut().zip(&queries) {
                    part.queries = queries.clone();
                }
            }
            let deltas = |projection: usize| row_deltas(&adapters, &queries, i, projection);
            let attend = |h: &Tensor| {
                let [k, v] = last_layer_kv.unwrap_or_else(|| key_values(h, &queries));
                let q = block.attn.q.forward_rows(h, &deltas(Q))?;
                let out = kv_cache::attend(
                    block.attn.shape(),
                    &self.rope,
                    i,
                    [&q, &k?, &v?],
                    &mut parts,
                )?;
                block.attn.o.forward_rows(&out, &deltas(O))
            };
            x = block.forward(&x, attend, &deltas)?;
        }
        for part in parts {
            part.cache.advance(part.rows.len());
        }
        self.head(&x)
    }

    /// The embeddings of token ids (a vector), from a table in either layout (see
    /// [`Self::for_inference`]).
    fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed.rows(ids)
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
