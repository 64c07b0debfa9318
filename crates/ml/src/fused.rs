//! Fused CPU kernels that train: each is one parallel pass forward and one backward.
//!
//! candle composes RMSNorm, masked softmax, SwiGLU and cross-entropy from elementwise primitives,
//! each a full pass over memory forward and more backward; its own fused versions of several of
//! them have no backward pass, so a model built on them cannot train. These ops have both. They
//! take f32 tensors on the CPU, the dtype and device the engine trains in. Rotary embeddings are
//! applied inside the training attention op (the `attention` module), with the tables kept here.
//!
//! Reductions over rows (the RMSNorm weight gradient) add fixed-size blocks in a fixed order, so a
//! result does not depend on how many threads computed it: training stays deterministic.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

/// Fewest elements worth a parallel task. Below it, handing work to the pool (from a thread
/// outside it, as the serving engine's is) costs more than doing it in place: a decode step's
/// one-row inputs stay on the calling thread.
const PARALLEL_GRAIN: usize = 4096;

/// Rows of `len` elements per parallel task.
fn grain(len: usize) -> usize {
    (PARALLEL_GRAIN / len.max(1)).max(1)
}

type CResult<T> = candle_core::Result<T>;

/// The contiguous f32 elements of an op's input.
pub(crate) fn elements<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!(
            "{op}: only f32 tensors are supported, got {:?}",
            storage.dtype()
        )
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: the input must be contiguous"),
    }
}

/// The length of the last dimension, the row every op here works on.
fn row_len(layout: &Layout, op: &str) -> CResult<usize> {
    match layout.dims().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => bail!("{op}: the input needs a non-empty last dimension"),
    }
}

fn same_shape(a: &Layout, b: &Layout, op: &str) -> CResult<()> {
    if a.shape() != b.shape() {
        bail!("{op}: shapes {:?} and {:?} differ", a.shape(), b.shape());
    }
    Ok(())
}

/// A backward op's rows (its input `x`, or its forward output) and their gradient `dy`, which must have the same shape, and
/// the row length.
fn input_and_grad<'a>(
    (xs, xl): (&'a CpuStorage, &Layout),
    (gs, gl): (&'a CpuStorage, &Layout),
    op: &str,
) -> CResult<(usize, &'a [f32], &'a [f32])> {
    same_shape(xl, gl, op)?;
    Ok((
        row_len(xl, op)?,
        elements(xs, xl, op)?,
        elements(gs, gl, op)?,
    ))
}

fn output(data: Vec<f32>, shape: &Shape) -> (CpuStorage, Shape) {
    (CpuStorage::F32(data), shape.clone())
}

/// Runs `f` compiled for the widest vector instructions the CPU has: AVX-512 or AVX2 (with FMA)
/// on x86-64 where present, where the project is built for SSE2. Matrix products already choose
/// their kernels at run time (gemm); this does the same for the hand-written kernels. What `f`
/// calls is compiled with it only when inlined, hence `#[inline(always)]` on the helpers.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// A dot product in eight independent lanes, which the compiler turns into vector instructions
/// (one running sum cannot be reordered, so it would stay scalar).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The sum of `x` in eight independent lanes (see [`dot`]).
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    sum_of(x, |v| v)
}

/// The sum of `f` over `x`, in eight independent lanes.
#[inline(always)]
fn sum_of(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let x8 = x.chunks_exact(8);
    let tail: f32 = x8.remainder().iter().map(|&v| f(v)).sum();
    for x in x8 {
        for i in 0..8 {
            lanes[i] += f(x[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The largest element of `x` (negative infinity when empty), in eight independent lanes.
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let x8 = x.chunks_exact(8);
    let tail = x8
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for x in x8 {
        for i in 0..8 {
            lanes[i] = lanes[i].max(x[i]);
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// `e^x` without a library call or a branch, so that a loop of it becomes vector instructions
/// (the C library's `expf` is called once per element). Cephes' method: `x = n·ln 2 + r` with
/// `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r`, and `2^n` put straight into the exponent
/// bits. Within 2 ulp of the C library's `expf` on `[-87, 88]`; the input is clamped to that
/// range, so it underflows to about 1e-38 rather than 0 and saturates near 2e38 rather than
/// infinity.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // ln 2 in two parts, the first exact in few bits, so that `n·ln 2` loses nothing.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    let n = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    e_r * f32::from_bits(((n + 127) << 23) as u32)
}

/// `x` replaced by `softmax(scale · x)`.
#[inline(always)]
pub(crate) fn softmax(x: &mut [f32], scale: f32) {
    let max = max(x);
    for v in x.iter_mut() {
        *v = exp(scale * (*v - max));
    }
    let inverse = 1.0 / sum(x);
    for v in x.iter_mut() {
        *v *= inverse;
    }
}

/// Root-mean-square normalisation of the last dimension of `x`, scaled by `weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> CResult<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

impl RmsNorm {
    #[inline(always)]
    fn inverse_rms(&self, row: &[f32]) -> f32 {
        let mean = dot(row, row) / row.len() as f32;
        1.0 / (mean + self.eps).sqrt()
    }

    fn weight<'a>(&self, storage: &'a CpuStorage, layout: &Layout, n: usize) -> CResult<&'a [f32]> {
        let weight = elements(storage, layout, "rms-norm")?;
        if weight.len() != n {
            bail!("rms-norm: weight of {} for rows of {n}", weight.len());
        }
        Ok(weight)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let n = row_len(xl, self.name())?;
        let x = elements(xs, xl, self.name())?;
        let w = self.weight(ws, wl, n)?;
        let mut y = vec![0f32; x.len()];
        let rows = y.par_chunks_mut(n).zip(x.par_chunks(n));
        rows.with_min_len(grain(n)).for_each(|(y, x)| {
            vectorized(
                #[inline(always)]
                || {
                    let r = self.inverse_rms(x);
                    for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                        *y = x * r * w;
                    }
                },
            )
        });
        Ok(output(y, xl.shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let eps = self.eps;
        let dx = x.apply_op3_no_bwd(w, &dy, &RmsNormInputGrad { eps })?;
        let dw = w
            .track_op()
            .then(|| x.apply_op2_no_bwd(&dy, &RmsNormWeightGrad { eps }))
            .transpose()?;
        Ok((Some(dx), dw))
    }
}

/// `dx = r·(dy⊙w) − x·r³·⟨dy⊙w, x⟩/n` per row, `r` the inverse RMS.
struct RmsNormInputGrad {
    eps: f32,
}

impl CustomOp3 for RmsNormInputGrad {
    fn name(&self) -> &'static str {
        "rms-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let norm = RmsNorm { eps: self.eps };
        let (n, x, dy) = input_and_grad((xs, xl), (gs, gl), self.name())?;
        let w = norm.weight(ws, wl, n)?;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(n)
            .zip(x.par_chunks(n).zip(dy.par_chunks(n)))
            .with_min_len(grain(n))
            .for_each(|(dx, (x, dy))| {
                vectorized(
                    #[inline(always)]
                    || {
                        let r = norm.inverse_rms(x);
                        // dx holds dy⊙w first, so that ⟨dy⊙w, x⟩ is a vectorised dot product.
                        for ((dx, g), w) in dx.iter_mut().zip(dy).zip(w) {
                            *dx = g * w;
                        }
                        let k = r * r * r * dot(dx, x) / n as f32;
                        for (dx, x) in dx.iter_mut().zip(x) {
                            *dx = r * *dx - x * k;
                        }
                    },
                )
            });
        Ok(output(dx, xl.shape()))
    }
}

/// `dw = Σ_rows dy⊙x·r`, summed in fixed blocks of rows so that it is deterministic.
struct RmsNormWeightGrad {
    eps: f32,
}

/// Rows per partial sum of a deterministic reduction.
const ROWS_PER_BLOCK: usize = 32;

impl CustomOp2 for RmsNormWeightGrad {
    fn name(&self) -> &'static str {
        "rms-norm-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let norm = RmsNorm { eps: self.eps };
        let (n, x, dy) = input_and_grad((xs, xl), (gs, gl), self.name())?;
        let block = n * ROWS_PER_BLOCK;
        let partials: Vec<Vec<f32>> = x
            .par_chunks(block)
            .zip(dy.par_chunks(block))
            .map(|(x, dy)| {
                let mut sum = vec![0f32; n];
                vectorized(
                    #[inline(always)]
                    || {
                        for (x, dy) in x.chunks(n).zip(dy.chunks(n)) {
                            let r = norm.inverse_rms(x);
                            for ((s, x), g) in sum.iter_mut().zip(x).zip(dy) {
                                *s += g * x * r;
                            }
                        }
                    },
                );
                sum
            })
            .collect();
        let mut dw = vec![0f32; n];
        for partial in partials {
            for (d, p) in dw.iter_mut().zip(partial) {
                *d += p;
            }
        }
        Ok(output(dw, &Shape::from(n)))
    }
}

/// Softmax of `scale · scores` over the last dimension under a causal mask.
///
/// `scores` is `… × queries × keys`, the queries being positions `offset..offset + queries` and the
/// keys positions `0..keys`: query `i` sees keys `0..=offset + i`, the others get probability 0.
pub fn causal_softmax(scores: &Tensor, scale: f64, offset: usize) -> CResult<Tensor> {
    let dims = scores.dims();
    if dims.len() < 2 || dims[dims.len() - 1] < offset + dims[dims.len() - 2] {
        bail!("causal softmax: scores {dims:?} lack the keys of {offset} earlier positions");
    }
    scores.contiguous()?.apply_op1(CausalSoftmax {
        scale: scale as f32,
        offset,
    })
}

struct CausalSoftmax {
    scale: f32,
    offset: usize,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let keys = row_len(layout, self.name())?;
        let queries = layout.dims()[layout.dims().len() - 2];
        let x = elements(storage, layout, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(keys)
            .zip(x.par_chunks(keys))
            .enumerate()
            .with_min_len(grain(keys))
            .for_each(|(row, (y, x))| {
                let seen = (self.offset + row % queries + 1).min(keys);
                y[..seen].copy_from_slice(&x[..seen]);
                vectorized(
                    #[inline(always)]
                    || softmax(&mut y[..seen], self.scale),
                );
            });
        Ok(output(y, layout.shape()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> CResult<Option<Tensor>> {
        let scale = self.scale;
        Ok(Some(y.apply_op2_no_bwd(
            &dy.contiguous()?,
            &SoftmaxGrad { scale },
        )?))
    }
}

/// `dx = scale · y ⊙ (dy − ⟨dy, y⟩)` per row.
pub(crate) struct SoftmaxGrad {
    pub scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (n, y, dy) = input_and_grad((ys, yl), (gs, gl), self.name())?;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(n)
            .zip(y.par_chunks(n).zip(dy.par_chunks(n)))
            .with_min_len(grain(n))
            .for_each(|(dx, (y, dy))| {
                vectorized(
                    #[inline(always)]
                    || {
                        let dot = dot(y, dy);
                        for ((dx, y), g) in dx.iter_mut().zip(y).zip(dy) {
                            *dx = self.scale * y * (g - dot);
                        }
                    },
                )
            });
        Ok(output(dx, yl.shape()))
    }
}

/// `silu(gate) ⊙ up`, the gated activation of a SwiGLU feed-forward layer.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> CResult<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

#[inline(always)]
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp(-v))
}

/// An elementwise map of two same-shaped tensors.
fn zip_map(
    op: &str,
    (a, al): (&CpuStorage, &Layout),
    (b, bl): (&CpuStorage, &Layout),
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> CResult<(CpuStorage, Shape)> {
    same_shape(al, bl, op)?;
    let (a, b) = (elements(a, al, op)?, elements(b, bl, op)?);
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(PARALLEL_GRAIN)
        .zip(
            a.par_chunks(PARALLEL_GRAIN)
                .zip(b.par_chunks(PARALLEL_GRAIN)),
        )
        .for_each(|(out, (a, b))| {
            vectorized(
                #[inline(always)]
                || {
                    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
                        *o = f(a, b);
                    }
                },
            )
        });
    Ok(output(out, al.shape()))
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        zip_map(self.name(), (gs, gl), (us, ul), |g, u| g * sigmoid(g) * u)
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let d_gate = gate
            .track_op()
            .then(|| gate.apply_op3_no_bwd(up, &dy, &SwiGluGateGrad))
            .transpose()?;
        let d_up = up
            .track_op()
            .then(|| gate.apply_op2_no_bwd(&dy, &SwiGluUpGrad))
            .transpose()?;
        Ok((d_gate, d_up))
    }
}

/// `d_gate = dy ⊙ up ⊙ σ(g)·(1 + g·(1 − σ(g)))`.
struct SwiGluGateGrad;

impl CustomOp3 for SwiGluGateGrad {
    fn name(&self) -> &'static str {
        "swiglu-gate-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let op = self.name();
        same_shape(gl, ul, op)?;
        same_shape(gl, dl, op)?;
        let (gate, up) = (elements(gs, gl, op)?, elements(us, ul, op)?);
        let dy = elements(ds, dl, op)?;
        let mut out = vec![0f32; gate.len()];
        out.par_iter_mut()
            .zip(gate.par_iter().zip(up).zip(dy))
            .with_min_len(PARALLEL_GRAIN)
            .for_each(|(o, ((&g, &u), &d))| {
                let s = sigmoid(g);
                *o = d * u * s * (1.0 + g * (1.0 - s));
            });
        Ok(output(out, gl.shape()))
    }
}

/// `d_up = dy ⊙ silu(gate)`.
struct SwiGluUpGrad;

impl CustomOp2 for SwiGluUpGrad {
    fn name(&self) -> &'static str {
        "swiglu-up-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        zip_map(self.name(), (gs, gl), (ds, dl), |g, d| d * g * sigmoid(g))
    }
}

/// Rotary position tables: per position, the cosine and sine of each of the `head_dim / 2`
/// frequencies, shared by every layer.
#[derive(Clone, Debug)]
pub struct RotaryTables {
    half: usize,
    cos: Arc<[f32]>,
    sin: Arc<[f32]>,
}

impl RotaryTables {
    /// Tables for `positions` positions of heads `head_dim` wide, with base `theta`.
    pub fn new(head_dim: usize, positions: usize, theta: f64) -> Self {
        let half = head_dim / 2;
        let angles: Vec<f64> = (0..positions)
            .flat_map(|p| {
                (0..half).map(move |i| p as f64 / theta.powf(2.0 * i as f64 / head_dim as f64))
            })
            .collect();
        Self {
            half,
            cos: angles.iter().map(|a| a.cos() as f32).collect(),
            sin: angles.iter().map(|a| a.sin() as f32).collect(),
        }
    }

    /// How many positions the tables cover.
    pub fn positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates one head's vector (`head_dim` wide) in place to `position`, or back from it.
    #[inline(always)]
    pub(crate) fn rotate(&self, head: &mut [f32], position: usize, inverse: bool) {
        let half = self.half;
        let at = position * half;
        let (cos, sin) = (&self.cos[at..at + half], &self.sin[at..at + half]);
        let sign = if inverse { -1.0 } else { 1.0 };
        let (x1, x2) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b, s) = (x1[i], x2[i], sign * sin[i]);
            x1[i] = a * cos[i] - b * s;
            x2[i] = a * s + b * cos[i];
        }
    }
}

/// Per-row negative log-likelihood of `targets` (`rows`, u32) under `logits` (`rows × vocab`).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> CResult<Tensor> {
    let (rows, vocab) = logits.dims2()?;
    let targets: Vec<u32> = targets.flatten_all()?.to_vec1()?;
    if targets.len() != rows {
        bail!(
            "cross-entropy: {} targets for {rows} rows of logits",
            targets.len()
        );
    }
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("cross-entropy: target token {bad} is outside the vocabulary of {vocab}");
    }
    logits.contiguous()?.apply_op1(CrossEntropy {
        targets: targets.into(),
    })
}

struct CrossEntropy {
    targets: Arc<[u32]>,
}

/// `log Σ exp(row)`, computed stably.
#[inline(always)]
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = max(row);
    max + sum_of(row, |v| exp(v - max)).ln()
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let vocab = row_len(layout, self.name())?;
        let logits = elements(storage, layout, self.name())?;
        let nll: Vec<f32> = logits
            .par_chunks(vocab)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| {
                vectorized(
                    #[inline(always)]
                    || log_sum_exp(row),
                ) - row[t as usize]
            })
            .collect();
        Ok(output(nll, &Shape::from(self.targets.len())))
    }

    fn bwd(&self, logits: &Tensor, _nll: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let op = CrossEntropyGrad {
            targets: self.targets.clone(),
        };
        Ok(Some(logits.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

/// `d_logits = (softmax(row) − onehot(target)) · grad[row]`.
struct CrossEntropyGrad {
    targets: Arc<[u32]>,
}

impl CustomOp2 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let vocab = row_len(ll, self.name())?;
        let logits = elements(ls, ll, self.name())?;
        let grad = elements(gs, gl, self.name())?;
        let mut out = vec![0f32; logits.len()];
        out.par_chunks_mut(vocab)
            .zip(logits.par_chunks(vocab))
            .zip(self.targets.par_iter().zip(grad))
            .for_each(|((out, row), (&t, &g))| {
                vectorized(
                    #[inline(always)]
                    || {
                        let lse = log_sum_exp(row);
                        for (o, v) in out.iter_mut().zip(row) {
                            *o = exp(v - lse) * g;
                        }
                    },
                );
                out[t as usize] -= g;
            });
        Ok(output(out, ll.shape()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{D, DType, Device, Var};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Checks `fused` against `reference` (composed of candle's differentiable primitives) on the
    /// value and on the gradient of every input, under a random upstream gradient.
    pub(crate) fn check(
        shapes: &[&[usize]],
        fused: impl Fn(&[Tensor]) -> CResult<Tensor>,
        reference: impl Fn(&[Tensor]) -> CResult<Tensor>,
    ) -> CResult<()> {
        let dev = Device::Cpu;
        let vars: Vec<Var> = shapes
            .iter()
            .map(|s| Var::randn(0f32, 1., *s, &dev))
            .collect::<CResult<_>>()?;
        let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (fused(&inputs)?, reference(&inputs)?);
        assert!(
            max_diff(&a, &b) < 1e-4,
            "values differ by {}",
            max_diff(&a, &b)
        );
        let upstream = Tensor::randn(0f32, 1., a.shape(), &dev)?;
        let ga = (a * &upstream)?.sum_all()?.backward()?;
        let gb = (b * &upstream)?.sum_all()?.backward()?;
        for (i, v) in vars.iter().enumerate() {
            let (da, db) = (
                ga.get(v).expect("fused grad"),
                gb.get(v).expect("reference grad"),
            );
            let diff = max_diff(da, db);
            assert!(diff < 1e-3, "gradient of input {i} differs by {diff}");
        }
        Ok(())
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_libraries() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            let ulp = want.to_bits().abs_diff(got.to_bits());
            assert!(ulp <= 2, "exp({x}) = {got}, the library says {want}");
            x += 0.0137;
        }
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn lane_reductions_match_the_plain_ones() {
        let x: Vec<f32> = (0..37).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
        assert_eq!(max(&x), x.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        assert!((sum(&x) - x.iter().sum::<f32>()).abs() < 1e-3);
        let mut y = x.clone();
        softmax(&mut y, 0.1);
        let total: f32 = x.iter().map(|v| (0.1 * (v - 49.0)).exp()).sum();
        for (y, x) in y.iter().zip(&x) {
            assert!((y - (0.1 * (x - 49.0)).exp() / total).abs() < 1e-6);
        }
    }

    #[test]
    fn rms_norm_matches_the_composed_form() -> CResult<()> {
        check(
            &[&[3, 70, 24], &[24]],
            |t| rms_norm(&t[0], &t[1], 1e-5),
            |t| {
                let rms = (t[0].sqr()?.mean_keepdim(D::Minus1)? + 1e-5)?.sqrt()?;
                t[0].broadcast_div(&rms)?.broadcast_mul(&t[1])
            },
        )
    }

    #[test]
    fn causal_softmax_matches_a_masked_softmax() -> CResult<()> {
        for offset in [0, 3] {
            check(
                &[&[2, 3, 5, 5 + offset]],
                |t| causal_softmax(&t[0], 0.5, offset),
                |t| {
                    let (q, k) = (5, 5 + offset);
                    let mask: Vec<f32> = (0..q)
                        .flat_map(|i| {
                            (0..k).map(move |j| {
                                if j > offset + i {
                                    f32::NEG_INFINITY
                                } else {
                                    0.
                                }
                            })
                        })
                        .collect();
                    let mask = Tensor::from_vec(mask, (q, k), &Device::Cpu)?;
                    candle_nn::ops::softmax(&(t[0].clone() * 0.5)?.broadcast_add(&mask)?, D::Minus1)
                },
            )?;
        }
        Ok(())
    }

    #[test]
    fn swiglu_matches_silu_times_up() -> CResult<()> {
        check(
            &[&[4, 9, 33], &[4, 9, 33]],
            |t| swiglu(&t[0], &t[1]),
            |t| t[0].silu()? * &t[1],
        )
    }

    /// Hugging Face's rotate-half rotation of `x` (`… × seq × head_dim`) to positions
    /// `offset..offset + seq`, in candle's differentiable primitives.
    pub(crate) fn rotate_half(x: &Tensor, tables: &RotaryTables, offset: usize) -> CResult<Tensor> {
        let dims = x.dims();
        let (seq, half) = (dims[dims.len() - 2], tables.half);
        let dev = Device::Cpu;
        let at = offset * half..(offset + seq) * half;
        let cos = Tensor::from_slice(&tables.cos[at.clone()], (seq, half), &dev)?;
        let sin = Tensor::from_slice(&tables.sin[at], (seq, half), &dev)?;
        let (cos, sin) = (
            Tensor::cat(&[&cos, &cos], 1)?,
            Tensor::cat(&[&sin, &sin], 1)?,
        );
        let last = dims.len() - 1;
        let rotated = Tensor::cat(
            &[
                &x.narrow(last, half, half)?.neg()?,
                &x.narrow(last, 0, half)?,
            ],
            last,
        )?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }

    #[test]
    fn rotation_matches_rotate_half_and_inverts() -> CResult<()> {
        let tables = RotaryTables::new(8, 16, 10_000.0);
        let x = Tensor::randn(0f32, 1., (5, 8), &Device::Cpu)?;
        let mut rows = x.to_vec2::<f32>()?;
        for (t, row) in rows.iter_mut().enumerate() {
            tables.rotate(row, 4 + t, false);
        }
        let rotated = Tensor::new(rows.clone(), &Device::Cpu)?;
        assert!(max_diff(&rotated, &rotate_half(&x, &tables, 4)?) < 1e-5);
        for (t, row) in rows.iter_mut().enumerate() {
            tables.rotate(row, 4 + t, true);
        }
        assert!(max_diff(&Tensor::new(rows, &Device::Cpu)?, &x) < 1e-5);
        Ok(())
    }

    #[test]
    fn cross_entropy_matches_log_softmax_and_gather() -> CResult<()> {
        let targets = Tensor::new(&[3u32, 0, 6, 6, 1], &Device::Cpu)?;
        check(
            &[&[5, 7]],
            |t| cross_entropy(&t[0], &targets),
            |t| {
                candle_nn::ops::log_softmax(&t[0], D::Minus1)?
                    .gather(&targets.unsqueeze(1)?, 1)?
                    .squeeze(1)?
                    .neg()
            },
        )?;
        let outside = Tensor::new(&[7u32], &Device::Cpu)?;
        let err = cross_entropy(&Tensor::zeros((1, 7), DType::F32, &Device::Cpu)?, &outside);
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("outside the vocabulary")
        );
        Ok(())
    }

    #[test]
    fn the_weight_gradient_does_not_depend_on_the_thread_count() -> CResult<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (300, 40), &dev)?;
        let w = Var::randn(0f32, 1., 40, &dev)?;
        let grad = |threads: usize| -> Vec<f32> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = rms_norm(&x, w.as_tensor(), 1e-5).unwrap();
                let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                g.get(&w).unwrap().to_vec1().unwrap()
            })
        };
        assert_eq!(grad(1), grad(3));
        Ok(())
    }
}
