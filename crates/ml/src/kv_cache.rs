//! Inference attention over a KV cache that grows in place.
//!
//! Training attends with candle ops, which have a backward. Inference needs none, and when one
//! step holds dozens of sequences of different lengths, candle ops per sequence (slices,
//! rotations, concatenations that copy the whole cache every token, two products, a softmax)
//! cost more than their arithmetic. Here each sequence's keys and values live in plain buffers
//! that new positions are appended to, and one pass computes every new position's attention, in
//! parallel when there is enough of it.

use std::ops::Range;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{MlError, Result};
use crate::fused::{RotaryTables, dot, softmax, vectorized};

/// Multiply-adds below which one step's attention stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 16;

/// Keys (already rotated) and values of the positions a sequence has seen, for every layer.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// Per layer, keys and values, position-major: `[position][kv head][head_dim]`.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
}

impl KvCache {
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records that every layer now holds `positions` more positions.
    pub(crate) fn advance(&mut self, positions: usize) {
        self.len += positions;
    }
}

/// The shape of a model's attention heads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One sequence's new rows in a step, and its cache.
pub(crate) struct SeqRows<'a> {
    pub rows: Range<usize>,
    pub cache: &'a mut KvCache,
}

/// Attention in layer `layer` for every sequence's new rows of `q`, `k` and `v` (`rows × width`,
/// before rotation): appends their keys and values to each sequence's cache and returns each
/// row's output (`rows × heads·head_dim`), every new position seeing its own sequence's earlier
/// positions and itself. Caches advance only when the caller calls [`KvCache::advance`], after
/// the last layer.
pub(crate) fn attend(
    shape: Heads,
    rope: &RotaryTables,
    layer: usize,
    [q, k, v]: [&Tensor; 3],
    seqs: &mut [SeqRows<'_>],
) -> Result<Tensor> {
    let Heads {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
    let device = q.device().clone();
    let mut q: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (k, v): (Vec<f32>, Vec<f32>) = (k.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?);
    let rows = q.len() / q_width;
    // Which sequence each row belongs to, and its position there.
    let mut owners = vec![(0, 0); rows];
    for (s, seq) in seqs.iter_mut().enumerate() {
        if seq.rows.end > rows {
            return Err(MlError::Input(format!(
                "sequence {s}'s rows {:?} run past the batch's {rows} rows",
                seq.rows
            )));
        }
        let offset = seq.cache.len;
        if seq.cache.layers.len() <= layer {
            seq.cache.layers.resize(layer + 1, Default::default());
        }
        let (keys, values) = &mut seq.cache.layers[layer];
        if keys.len() != offset * kv_width {
            return Err(MlError::Input(format!(
                "layer {layer}'s cache holds {} positions where {offset} were expected",
                keys.len() / kv_width
            )));
        }
        for (i, row) in seq.rows.clone().enumerate() {
            let position = offset + i;
            owners[row] = (s, position);
            for head in q[row * q_width..][..q_width].chunks_exact_mut(head_dim) {
                rope.rotate(head, position, false);
            }
            let start = keys.len();
            keys.extend_from_slice(&k[row * kv_width..][..kv_width]);
            for head in keys[start..].chunks_exact_mut(head_dim) {
                rope.rotate(head, position, false);
            }
            values.extend_from_slice(&v[row * kv_width..][..kv_width]);
        }
    }
    let caches: Vec<&(Vec<f32>, Vec<f32>)> = seqs.iter().map(|s| &s.cache.layers[layer]).collect();
    let work = owners.iter().map(|&(_, p)| p + 1).sum::<usize>() * q_width * 2;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0f32; rows * q_width];
    out.par_chunks_mut(q_width)
        .zip(q.par_chunks(q_width))
        .zip(owners.par_iter())
        .with_min_len(if work < PARALLEL_WORK { rows.max(1) } else { 1 })
        .for_each_with(Vec::new(), |scores, ((out, q), &(s, position))| {
            vectorized(
                #[inline(always)]
                || attend_row(caches[s], out, q, position, shape, scale, scores),
            )
        });
    Ok(Tensor::from_vec(out, (rows, q_width), &device)?)
}

/// One new position's attention over its sequence's cache (`keys`, `values`) and itself. The
/// query heads that share a key/value head are done together, so that each key and value is read
/// once for all of them; `scores` is room for the scores, reused from row to row.
#[inline(always)]
fn attend_row(
    (keys, values): &(Vec<f32>, Vec<f32>),
    out: &mut [f32],
    q: &[f32],
    position: usize,
    shape: Heads,
    scale: f32,
    scores: &mut Vec<f32>,
) {
    let Heads {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let (group, kv_width, seen) = (heads / kv_heads, kv_heads * head_dim, position + 1);
    scores.resize(group * seen, 0.0);
    let group_width = group * head_dim;
    for (kv, (out, q)) in out
        .chunks_exact_mut(group_width)
        .zip(q.chunks_exact(group_width))
        .enumerate()
    {
        let at = kv * head_dim;
        for j in 0..seen {
            let key = &keys[j * kv_width + at..][..head_dim];
            for (g, q) in q.chunks_exact(head_dim).enumerate() {
                scores[g * seen + j] = dot(q, key);
            }
        }
        for scores in scores.chunks_exact_mut(seen) {
            softmax(scores, scale);
        }
        for j in 0..seen {
            let value = &values[j * kv_width + at..][..head_dim];
            for (g, out) in out.chunks_exact_mut(head_dim).enumerate() {
                let weight = scores[g * seen + j];
                for (o, v) in out.iter_mut().zip(value) {
                    *o += weight * v;
                }
            }
        }
    }
}
