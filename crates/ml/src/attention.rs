//! Causal grouped-query self-attention with rotary embeddings for training, as one op forward and
//! one backward.
//!
//! Composed from candle ops, a layer's attention is a dozen graph nodes: head splits, transposes,
//! two rotations, the two products, the masked softmax and the merge of the heads. candle's
//! backward pass gives every node a zero-filled gradient buffer that it adds into, so a dozen
//! passes over the layer's activations do no arithmetic at all. Here the layer is one node: the
//! forward pass lays the heads out once (rotating queries and keys on the way) and keeps the
//! attention weights; the backward pass computes the three input gradients with four products and
//! one pass of softmax gradient. The products are candle's, on tensors that record no graph.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Storage, Tensor, bail};
use rayon::prelude::*;

use crate::fused::{RotaryTables, SoftmaxGrad, causal_softmax, elements, vectorized};
use crate::kv_cache::Heads;

type CResult<T> = candle_core::Result<T>;

/// Attention of `q` (`batch × seq × heads·head_dim`) over `k` and `v` (`batch × seq ×
/// kv_heads·head_dim`), before rotation, each position seeing itself and the positions before it.
/// Returns `batch × seq × heads·head_dim`, the heads side by side as the output projection takes
/// them.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: Heads,
    rope: &RotaryTables,
) -> CResult<Tensor> {
    let (batch, seq, width) = q.dims3()?;
    let Heads {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let kv_width = kv_heads * head_dim;
    if width != heads * head_dim || k.dims3()? != (batch, seq, kv_width) || k.dims() != v.dims() {
        bail!(
            "attention: queries {:?}, keys {:?} and values {:?} do not fit {heads} heads of \
             {head_dim} over {kv_heads} key-value heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if seq > rope.positions() {
        bail!(
            "attention: {seq} positions beyond the {} of the rotary tables",
            rope.positions()
        );
    }
    let op = Attention {
        shape,
        rope: rope.clone(),
        saved: OnceLock::new(),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

struct Attention {
    shape: Heads,
    rope: RotaryTables,
    /// What the forward pass computed that the backward pass reuses.
    saved: OnceLock<Saved>,
}

/// Head-major (`batch × kv_heads × rows × head_dim`, a key-value head's group of query heads
/// stacked along the rows) rotated queries and keys, values, and the attention weights
/// (`batch × kv_heads × group·seq × seq`).
struct Saved {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
}

/// How rows of heads side by side (`batch × seq × heads·head_dim`) map to head-major rows.
#[derive(Clone, Copy)]
struct HeadLayout {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
}

impl HeadLayout {
    /// `batch × seq × heads·head_dim` to `batch × heads × seq × head_dim`, rotating each head to
    /// its position when `rope` is given.
    fn split(self, x: &[f32], rope: Option<&RotaryTables>) -> Vec<f32> {
        self.reorder(x, true, rope)
    }

    /// The inverse of [`Self::split`]: head-major rows back side by side, rotated back when
    /// `rope` is given (a rotation's transpose is its inverse, so this carries gradients back).
    fn merge(self, x: &[f32], rope: Option<&RotaryTables>) -> Vec<f32> {
        self.reorder(x, false, rope)
    }

    /// Both directions at once: each output chunk is a head's positions (`to_heads`) or a
    /// position's heads, gathered row by row from the other layout.
    fn reorder(self, x: &[f32], to_heads: bool, rope: Option<&RotaryTables>) -> Vec<f32> {
        let Self {
            seq,
            heads,
            head_dim,
            ..
        } = self;
        let (outer, inner) = if to_heads { (heads, seq) } else { (seq, heads) };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(inner * head_dim)
            .enumerate()
            .for_each(|(i, out)| {
                let (b, o) = (i / outer, i % outer);
                vectorized(
                    #[inline(always)]
                    || {
                        for (r, row) in out.chunks_exact_mut(head_dim).enumerate() {
                            let from = ((b * inner + r) * outer + o) * head_dim;
                            row.copy_from_slice(&x[from..from + head_dim]);
                            if let Some(rope) = rope {
                                let position = if to_heads { r } else { o };
                                rope.rotate(row, position, !to_heads);
                            }
                        }
                    },
                )
            });
        out
    }

    fn shape(self) -> (usize, usize, usize) {
        (self.batch, self.seq, self.heads * self.head_dim)
    }
}

impl Attention {
    fn layouts(&self, batch: usize, seq: usize) -> (HeadLayout, HeadLayout) {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = self.shape;
        let layout = |heads| HeadLayout {
            batch,
            seq,
            heads,
            head_dim,
        };
        (layout(heads), layout(kv_heads))
    }

    /// A head-major buffer as a tensor of `rows` rows per key-value head.
    fn heads(&self, data: Vec<f32>, batch: usize, rows: usize) -> CResult<Tensor> {
        let shape = (batch, self.shape.kv_heads, rows, self.shape.head_dim);
        Tensor::from_vec(data, shape, &Device::Cpu)
    }
}

/// Runs `f` on a CPU tensor's contiguous elements.
fn with_elements<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> CResult<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(storage) = &*storage else {
        bail!("attention: tensors must be on the CPU");
    };
    Ok(f(elements(storage, layout, "attention")?))
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (batch, seq, _) = ql.shape().dims3()?;
        let (q_layout, kv_layout) = self.layouts(batch, seq);
        let group = self.shape.heads / self.shape.kv_heads;
        let [q, k, v] = [(qs, ql), (ks, kl), (vs, vl)].map(|(s, l)| elements(s, l, self.name()));
        let q = self.heads(q_layout.split(q?, Some(&self.rope)), batch, group * seq)?;
        let k = self.heads(kv_layout.split(k?, Some(&self.rope)), batch, seq)?;
        let v = self.heads(kv_layout.split(v?, None), batch, seq)?;
        let scores = q.matmul(&k.t()?)?;
        let scale = 1.0 / (self.shape.head_dim as f64).sqrt();
        let grouped = (batch, self.shape.kv_heads, group, seq, seq);
        let probs = causal_softmax(&scores.reshape(grouped)?, scale, 0)?.reshape(scores.shape())?;
        let out = with_elements(&probs.matmul(&v)?, |o| q_layout.merge(o, None))?;
        if self.saved.set(Saved { q, k, v, probs }).is_err() {
            bail!("attention: the op ran forward twice");
        }
        Ok((CpuStorage::F32(out), Shape::from(q_layout.shape())))
    }

    fn bwd(
        &self,
        q: &Tensor,
        _k: &Tensor,
        _v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else {
            bail!("attention: backward pass before the forward pass");
        };
        let (batch, seq, _) = q.dims3()?;
        let (q_layout, kv_layout) = self.layouts(batch, seq);
        let group = self.shape.heads / self.shape.kv_heads;
        let d_out = with_elements(grad, |g| q_layout.split(g, None))?;
        let d_out = self.heads(d_out, batch, group * seq)?;
        // The stacked rows of a group sum its query heads' contributions to their shared key and
        // value head in the products themselves.
        let d_v = saved.probs.t()?.matmul(&d_out)?;
        let d_probs = d_out.matmul(&saved.v.t()?)?;
        let scale = 1.0 / (self.shape.head_dim as f32).sqrt();
        let d_scores = saved
            .probs
            .apply_op2_no_bwd(&d_probs, &SoftmaxGrad { scale })?;
        let d_q = d_scores.matmul(&saved.k)?;
        let d_k = d_scores.t()?.matmul(&saved.q)?;
        let back =
            |t: &Tensor, layout: HeadLayout, rope: Option<&RotaryTables>| -> CResult<Tensor> {
                let data = with_elements(t, |x| layout.merge(x, rope))?;
                Tensor::from_vec(data, layout.shape(), &Device::Cpu)
            };
        Ok((
            Some(back(&d_q, q_layout, Some(&self.rope))?),
            Some(back(&d_k, kv_layout, Some(&self.rope))?),
            Some(back(&d_v, kv_layout, None)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::tests::{check, rotate_half};

    /// The candle ops this op replaces: heads split and rotated, each key-value head multiplied
    /// with its group of query heads, a causal softmax, the heads merged. `qkv` holds the
    /// queries, keys and values.
    fn composed(qkv: &[Tensor], shape: Heads, rope: &RotaryTables) -> CResult<Tensor> {
        let [q, k, v] = qkv else {
            unreachable!("three inputs")
        };
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = shape;
        let (b, s, _) = q.dims3()?;
        let split = |t: &Tensor, heads: usize| {
            t.reshape((b, s, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let group = heads / kv_heads;
        let q =
            rotate_half(&split(q, heads)?, rope, 0)?.reshape((b, kv_heads, group * s, head_dim))?;
        let k = rotate_half(&split(k, kv_heads)?, rope, 0)?;
        let scores = q.matmul(&k.t()?)?.reshape((b, kv_heads, group, s, s))?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let probs = causal_softmax(&scores, scale, 0)?.reshape((b, kv_heads, group * s, s))?;
        probs
            .matmul(&split(v, kv_heads)?)?
            .reshape((b, heads, s, head_dim))?
            .transpose(1, 2)?
            .reshape((b, s, heads * head_dim))
    }

    #[test]
    fn matches_the_composed_ops_forward_and_backward() -> CResult<()> {
        let rope = RotaryTables::new(8, 16, 10_000.0);
        for (heads, kv_heads) in [(4, 2), (3, 3), (4, 1)] {
            let shape = Heads {
                heads,
                kv_heads,
                head_dim: 8,
            };
            check(
                &[
                    &[2, 7, heads * 8],
                    &[2, 7, kv_heads * 8],
                    &[2, 7, kv_heads * 8],
                ],
                |t| attention(&t[0], &t[1], &t[2], shape, &rope),
                |t| composed(t, shape, &rope),
            )?;
        }
        Ok(())
    }

    #[test]
    fn inputs_that_do_not_fit_the_heads_are_refused() {
        let rope = RotaryTables::new(8, 16, 10_000.0);
        let shape = Heads {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        };
        let zeros = |dims: &[usize]| Tensor::zeros(dims, candle_core::DType::F32, &Device::Cpu);
        let (q, kv) = (zeros(&[1, 5, 32]).unwrap(), zeros(&[1, 5, 16]).unwrap());
        let error = attention(&q, &q, &kv, shape, &rope).unwrap_err();
        assert!(error.to_string().contains("do not fit"), "{error}");
        let long = zeros(&[1, 17, 32]).unwrap();
        let error = attention(
            &long,
            &zeros(&[1, 17, 16]).unwrap(),
            &zeros(&[1, 17, 16]).unwrap(),
            shape,
            &rope,
        )
        .unwrap_err();
        assert!(error.to_string().contains("rotary tables"), "{error}");
    }
}
