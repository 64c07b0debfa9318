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
use crate::fused::{RotaryTables, softmax, vectorized};

/// Multiply-adds below which one step's attention stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 16;

/// Positions per block of keys: one vector register of scores.
const BLOCK: usize = 8;

/// Keys (already rotated) and values of the positions a sequence has seen, for every layer.
///
/// Keys are stored in blocks of [`BLOCK`] positions, dimension-major within a block
/// (`[block][kv head][head_dim][position in block]`), so that one query's scores against a block
/// are [`BLOCK`] independent sums of products, each a lane of a vector: no sum across a register
/// per key. Values are position-major (`[position][kv head][head_dim]`): a weighted sum of them
/// adds whole rows.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// Per layer, keys and values.
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
    /// Its rows of the step's keys and values, one per new position.
    pub rows: Range<usize>,
    /// Its rows of the step's queries: those of its last `queries.len()` new positions (all of
    /// them, or where only the last position's output is read, that one).
    pub queries: Range<usize>,
    pub cache: &'a mut KvCache,
}

/// Attention in layer `layer` for the sequences' new rows of `k` and `v` and their queries `q`
/// (each `rows × width`, before rotation): appends the keys and values to each sequence's cache
/// and returns each query's output (`queries × heads·head_dim`), every position seeing its own
/// sequence's earlier positions and itself. Caches advance only when the caller calls
/// [`KvCache::advance`], after the last layer.
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
    let (mut k, v): (Vec<f32>, Vec<f32>) =
        (k.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?);
    let (rows, queries) = (k.len() / kv_width, q.len() / q_width);
    // Which sequence each query belongs to, and its position there.
    let mut owners = vec![(0, 0); queries];
    for (s, seq) in seqs.iter_mut().enumerate() {
        if seq.rows.end > rows || seq.queries.end > queries || seq.queries.len() > seq.rows.len() {
            return Err(MlError::Input(format!(
                "sequence {s}'s rows {:?} and queries {:?} do not fit the batch's {rows} rows \
                 and {queries} queries",
                seq.rows, seq.queries
            )));
        }
        let offset = seq.cache.len;
        if seq.cache.layers.len() <= layer {
            seq.cache.layers.resize(layer + 1, Default::default());
        }
        let (keys, values) = &mut seq.cache.layers[layer];
        if values.len() != offset * kv_width
            || keys.len() != offset.div_ceil(BLOCK) * kv_width * BLOCK
        {
            return Err(MlError::Input(format!(
                "layer {layer}'s cache holds {} positions where {offset} were expected",
                values.len() / kv_width
            )));
        }
        for (i, row) in seq.rows.clone().enumerate() {
            let position = offset + i;
            let key = &mut k[row * kv_width..][..kv_width];
            for head in key.chunks_exact_mut(head_dim) {
                rope.rotate(head, position, false);
            }
            if position % BLOCK == 0 {
                keys.resize(keys.len() + kv_width * BLOCK, 0.0);
            }
            let block = keys.len() - kv_width * BLOCK;
            for (i, &x) in key.iter().enumerate() {
                keys[block + i * BLOCK + position % BLOCK] = x;
            }
            values.extend_from_slice(&v[row * kv_width..][..kv_width]);
        }
        let first = offset + seq.rows.len() - seq.queries.len();
        for (i, row) in seq.queries.clone().enumerate() {
            owners[row] = (s, first + i);
            for head in q[row * q_width..][..q_width].chunks_exact_mut(head_dim) {
                rope.rotate(head, first + i, false);
            }
        }
    }
    let caches: Vec<&(Vec<f32>, Vec<f32>)> = seqs.iter().map(|s| &s.cache.layers[layer]).collect();
    let work = owners.iter().map(|&(_, p)| p + 1).sum::<usize>() * q_width * 2;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0f32; queries * q_width];
    out.par_chunks_mut(q_width)
        .zip(q.par_chunks(q_width))
        .zip(owners.par_iter())
        .with_min_len(if work < PARALLEL_WORK {
            queries.max(1)
        } else {
            1
        })
        .for_each_with(Vec::new(), |scores, ((out, q), &(s, position))| {
            vectorized(
                #[inline(always)]
                || attend_row(caches[s], out, q, position, shape, scale, scores),
            )
        });
    Ok(Tensor::from_vec(out, (queries, q_width), &device)?)
}

/// One new position's attention over its sequence's cache (`keys`, `values`) and itself. The
/// query heads that share a key/value head are done one after the other, so that the key/value
/// head's rows they all read stay in the L1 cache; `scores` is room for the scores, reused from
/// row to row.
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
        kv_heads, head_dim, ..
    } = shape;
    let (kv_width, seen) = (kv_heads * head_dim, position + 1);
    let blocks = seen.div_ceil(BLOCK);
    scores.resize(blocks * BLOCK, 0.0);
    let group_width = shape.heads / kv_heads * head_dim;
    for (kv, (out, q)) in out
        .chunks_exact_mut(group_width)
        .zip(q.chunks_exact(group_width))
        .enumerate()
    {
        let at = kv * head_dim;
        for (out, q) in out.chunks_exact_mut(head_dim).zip(q.chunks_exact(head_dim)) {
            for (b, scores) in scores.chunks_exact_mut(BLOCK).enumerate() {
                let block = &keys[(b * kv_width + at) * BLOCK..][..head_dim * BLOCK];
                scores.copy_from_slice(&score_block(q, block));
            }
            let scores = &mut scores[..seen];
            softmax(scores, scale);
            for (chunk, out) in out.chunks_mut(BLOCK).enumerate() {
                let at = at + chunk * BLOCK;
                if out.len() == BLOCK {
                    out.copy_from_slice(&weighted_rows(scores, values, kv_width, at));
                } else {
                    for (d, out) in out.iter_mut().enumerate() {
                        let rows = (0..seen).map(|j| values[j * kv_width + at + d]);
                        *out = rows.zip(&*scores).map(|(v, w)| v * w).sum();
                    }
                }
            }
        }
    }
}

/// The dot products of `q` with the [`BLOCK`] keys of `block` (dimension-major), each a lane;
/// four running sums over the dimensions, so that consecutive multiply-adds do not wait on each
/// other. `mul_add` here and in [`weighted_rows`] is one instruction inside [`vectorized`]'s
/// FMA-capable dispatch (outside it, a slower library call).
#[inline(always)]
fn score_block(q: &[f32], block: &[f32]) -> [f32; BLOCK] {
    let mut sums = [[0f32; BLOCK]; 4];
    let (q4, k4) = (q.chunks_exact(4), block.chunks_exact(4 * BLOCK));
    for (&q, k) in q4
        .remainder()
        .iter()
        .zip(k4.remainder().chunks_exact(BLOCK))
    {
        for l in 0..BLOCK {
            sums[0][l] = q.mul_add(k[l], sums[0][l]);
        }
    }
    for (q, k) in q4.zip(k4) {
        for (u, sum) in sums.iter_mut().enumerate() {
            for l in 0..BLOCK {
                sum[l] = q[u].mul_add(k[u * BLOCK + l], sum[l]);
            }
        }
    }
    std::array::from_fn(|l| (sums[0][l] + sums[1][l]) + (sums[2][l] + sums[3][l]))
}

/// `Σ_j weights[j] · values[j·stride + at ..][..BLOCK]`, four rows at a time in separate sums.
#[inline(always)]
fn weighted_rows(weights: &[f32], values: &[f32], stride: usize, at: usize) -> [f32; BLOCK] {
    let mut sums = [[0f32; BLOCK]; 4];
    let w4 = weights.chunks_exact(4);
    let tail = w4.len() * 4;
    for (j, &w) in w4.remainder().iter().enumerate() {
        let row = &values[(tail + j) * stride + at..][..BLOCK];
        for l in 0..BLOCK {
            sums[0][l] = w.mul_add(row[l], sums[0][l]);
        }
    }
    for (j, w) in w4.enumerate() {
        for (u, sum) in sums.iter_mut().enumerate() {
            let row = &values[(4 * j + u) * stride + at..][..BLOCK];
            for l in 0..BLOCK {
                sum[l] = w[u].mul_add(row[l], sum[l]);
            }
        }
    }
    std::array::from_fn(|l| (sums[0][l] + sums[1][l]) + (sums[2][l] + sums[3][l]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `n` rows of `width` deterministic values in [-1, 1].
    fn rows(n: usize, width: usize, seed: f32) -> Vec<Vec<f32>> {
        let value = |i: usize| (i as f32 * 0.731 + seed).sin();
        (0..n)
            .map(|r| (0..width).map(|c| value(r * width + c)).collect())
            .collect()
    }

    /// Attention by its definition: position `i`'s rotated query against the rotated keys of
    /// positions `0..=i`, scaled, softmax, the values weighted.
    fn by_definition(
        shape: Heads,
        rope: &RotaryTables,
        qkv: [&[Vec<f32>]; 3],
        i: usize,
    ) -> Vec<f32> {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = shape;
        let rotated = |x: &[f32], at: usize, p: usize| {
            let mut head = x[at..at + head_dim].to_vec();
            rope.rotate(&mut head, p, false);
            head
        };
        let [q, k, v] = qkv;
        let mut out = Vec::new();
        for h in 0..heads {
            let kv = h / (heads / kv_heads) * head_dim;
            let query = rotated(&q[i], h * head_dim, i);
            let scores: Vec<f32> = (0..=i)
                .map(|j| {
                    let key = rotated(&k[j], kv, j);
                    query.iter().zip(&key).map(|(a, b)| a * b).sum::<f32>()
                        / (head_dim as f32).sqrt()
                })
                .collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = weights.iter().sum();
            out.extend((0..head_dim).map(|d| {
                (0..=i)
                    .map(|j| weights[j] / total * v[j][kv + d])
                    .sum::<f32>()
            }));
        }
        out
    }

    #[test]
    fn attention_over_the_cache_is_attention_by_its_definition() -> Result<()> {
        // Head widths a multiple of the key block, not one, and not even a multiple of four;
        // two sequences, prompts of 13 and 5 positions, then 8 positions one at a time each, so
        // that blocks of keys fill up, stay partial and are read while partial.
        for head_dim in [32, 12, 6] {
            let shape = Heads {
                heads: 4,
                kv_heads: 2,
                head_dim,
            };
            let rope = RotaryTables::new(head_dim, 64, 10_000.0);
            let lengths = [21, 13];
            let seqs: Vec<[Vec<Vec<f32>>; 3]> = lengths
                .iter()
                .enumerate()
                .map(|(s, &n)| {
                    let seed = s as f32 * 3.0;
                    [
                        rows(n, 4 * head_dim, seed),
                        rows(n, 2 * head_dim, seed + 1.0),
                        rows(n, 2 * head_dim, seed + 2.0),
                    ]
                })
                .collect();
            let mut caches = [KvCache::default(), KvCache::default()];
            let steps = [vec![0..13, 0..5]]
                .into_iter()
                .chain((0..8).map(|t| vec![13 + t..14 + t, 5 + t..6 + t]));
            for positions in steps {
                let tensor = |x: usize| -> Result<Tensor> {
                    let rows: Vec<f32> = positions
                        .iter()
                        .zip(&seqs)
                        .flat_map(|(p, seq)| seq[x][p.clone()].concat())
                        .collect();
                    let width = seqs[0][x][0].len();
                    Ok(Tensor::from_vec(
                        rows.clone(),
                        (rows.len() / width, width),
                        &Device::Cpu,
                    )?)
                };
                let mut row = 0;
                let mut parts: Vec<SeqRows> = caches
                    .iter_mut()
                    .zip(&positions)
                    .map(|(cache, p)| {
                        row += p.len();
                        SeqRows {
                            rows: row - p.len()..row,
                            queries: row - p.len()..row,
                            cache,
                        }
                    })
                    .collect();
                let [q, k, v] = [tensor(0)?, tensor(1)?, tensor(2)?];
                let out = attend(shape, &rope, 0, [&q, &k, &v], &mut parts)?.to_vec2::<f32>()?;
                let mut out = out.iter();
                for (p, seq) in positions.iter().zip(&seqs) {
                    let [q, k, v] = seq.each_ref().map(|x| x.as_slice());
                    for i in p.clone() {
                        let want = by_definition(shape, &rope, [q, k, v], i);
                        let got = out.next().expect("a row per position");
                        let diff = got
                            .iter()
                            .zip(&want)
                            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(
                            diff < 1e-5,
                            "head width {head_dim}, position {i}: differs by {diff}"
                        );
                    }
                }
                for (cache, p) in caches.iter_mut().zip(&positions) {
                    cache.advance(p.len());
                }
            }
        }
        Ok(())
    }
}
