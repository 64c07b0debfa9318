//! Products with a Q4_1 matrix over a few rows (a decode step), as llama.cpp computes them: the
//! rows quantized to 8 bits per 32-value block (its Q8_1), then per block an integer dot product
//! of the 4-bit weights with the 8-bit values, scaled. candle's own Q4_1 dot product is scalar
//! code; this one is written for the compiler to vectorize and runs compiled for AVX2 or AVX-512
//! where the CPU has them ([`crate::fused::vectorized`]).
//!
//! A Q4_1 block is 20 bytes: the scale `d` and minimum `m` (f16), then 16 bytes whose low nibbles
//! are values 0–15 and high nibbles values 16–31; a weight is `d · q + m`.

use half::f16;
use rayon::prelude::*;

use crate::fused::vectorized;

/// Values a block holds.
const BLOCK: usize = 32;
/// Bytes a Q4_1 block takes.
const BLOCK_BYTES: usize = 20;
/// Output rows a worker takes at a time.
const CHUNK: usize = 64;

/// Rows of activations in 8-bit blocks: per block its scale `d`, `d · Σq` and 32 values.
struct Q8Rows {
    d: Vec<f32>,
    s: Vec<f32>,
    q: Vec<[i8; BLOCK]>,
    blocks: usize,
}

impl Q8Rows {
    fn quantize(x: &[f32], inputs: usize) -> Self {
        let blocks = inputs / BLOCK;
        let n = x.len() / BLOCK;
        let (mut d, mut s, mut q) = (vec![0.0; n], vec![0.0; n], vec![[0i8; BLOCK]; n]);
        for (i, values) in x.chunks_exact(BLOCK).enumerate() {
            let amax = values.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (out, v) in q[i].iter_mut().zip(values) {
                *out = (v * inverse).round() as i8;
                sum += *out as i32;
            }
            d[i] = scale;
            s[i] = scale * sum as f32;
        }
        Self { d, s, q, blocks }
    }

    fn rows(&self) -> usize {
        self.d.len() / self.blocks
    }
}

/// `x · wᵀ` for `x` (`rows × inputs`, row-major) and `w`, a Q4_1 matrix of `out` rows given as
/// its bytes: `rows × out`, row-major.
pub(crate) fn matmul(w: &[u8], out: usize, inputs: usize, x: &[f32]) -> Vec<f32> {
    if x.is_empty() {
        return Vec::new();
    }
    let x = Q8Rows::quantize(x, inputs);
    let (rows, row_bytes) = (x.rows(), x.blocks * BLOCK_BYTES);
    debug_assert_eq!(w.len(), out * row_bytes);
    // Output-major while the workers fill it, each a chunk of output rows; transposed at the end.
    let mut by_output = vec![0f32; out * rows];
    by_output
        .par_chunks_mut(CHUNK * rows)
        .zip(w.par_chunks(CHUNK * row_bytes))
        .for_each(|(y, w)| {
            for (y, w) in y.chunks_exact_mut(rows).zip(w.chunks_exact(row_bytes)) {
                dot_rows(w, &x, y);
            }
        });
    let mut y = vec![0f32; rows * out];
    for (o, values) in by_output.chunks_exact(rows).enumerate() {
        for (r, v) in values.iter().enumerate() {
            y[r * out + o] = *v;
        }
    }
    y
}

/// One weight row (its blocks' bytes) with every row of `x`, into `y`: with
/// AVX2 where the CPU has it (llama.cpp's instructions), else in portable code.
fn dot_rows(w: &[u8], x: &Q8Rows, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx2::dot_rows(w, x, y) };
    }
    vectorized(|| {
        for (r, y) in y.iter_mut().enumerate() {
            *y = dot(w, x, r);
        }
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK_BYTES, Q8Rows};

    /// [`super::dot_rows`] with AVX2, four rows at a time, then one at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_rows(w: &[u8], x: &Q8Rows, y: &mut [f32]) {
        assert!(w.len() == x.blocks * BLOCK_BYTES && y.len() == x.rows());
        let done = y.len() / 4 * 4;
        for (i, y) in y[..done].chunks_exact_mut(4).enumerate() {
            y.copy_from_slice(&dot::<4>(w, x, 4 * i));
        }
        for (i, y) in y[done..].iter_mut().enumerate() {
            *y = dot::<1>(w, x, done + i)[0];
        }
    }

    /// One weight row with `N` rows of `x` from `first`: each block's 32 weights unpacked once
    /// into bytes, multiplied with each row's 32 values by `maddubs` (unsigned by signed bytes,
    /// summed in pairs), the sums widened and scaled into a vector of running sums per row, all
    /// of them in registers.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot<const N: usize>(w: &[u8], x: &Q8Rows, first: usize) -> [f32; N] {
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut sums = [_mm256_setzero_ps(); N];
        let mut minimums = [0f32; N];
        for (b, block) in w.chunks_exact(BLOCK_BYTES).enumerate() {
            let packed = i32::from_le_bytes(block[..4].try_into().expect("a block"));
            let scales = _mm_cvtph_ps(_mm_cvtsi32_si128(packed));
            let (d, m) = (
                _mm_cvtss_f32(scales),
                _mm_cvtss_f32(_mm_shuffle_ps::<1>(scales, scales)),
            );
            // SAFETY: a block is 20 bytes, `d` and `m` then 16 of nibbles.
            let nibbles = unsafe { _mm_loadu_si128(block.as_ptr().add(4).cast()) };
            let weights = _mm256_set_m128i(
                _mm_and_si128(_mm_srli_epi16::<4>(nibbles), mask),
                _mm_and_si128(nibbles, mask),
            );
            for (r, (sum, minimum)) in sums.iter_mut().zip(&mut minimums).enumerate() {
                let i = (first + r) * x.blocks + b;
                // SAFETY: `x.q[i]` is 32 bytes.
                let values = unsafe { _mm256_loadu_si256(x.q[i].as_ptr().cast()) };
                let products = _mm256_madd_epi16(_mm256_maddubs_epi16(weights, values), ones);
                let scale = _mm256_set1_ps(d * x.d[i]);
                *sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products), scale, *sum);
                *minimum += m * x.s[i];
            }
        }
        std::array::from_fn(|r| horizontal_sum(sums[r]) + minimums[r])
    }

    #[target_feature(enable = "avx2")]
    fn horizontal_sum(v: __m256) -> f32 {
        let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pairs = _mm_hadd_ps(halves, halves);
        _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs))
    }
}

/// One weight row (its blocks' bytes) with row `r` of `x`, in portable code.
#[inline(always)]
fn dot(w: &[u8], x: &Q8Rows, r: usize) -> f32 {
    let first = r * x.blocks;
    let mut lanes = [0f32; BLOCK / 2];
    let mut minimums = 0f32;
    for (b, block) in w.chunks_exact(BLOCK_BYTES).enumerate() {
        let (d, m) = (half(block, 0), half(block, 2));
        let q = &x.q[first + b];
        let products = block_products(block[4..].try_into().expect("16 bytes"), q);
        let scale = d * x.d[first + b];
        for (lane, p) in lanes.iter_mut().zip(products) {
            *lane += p as f32 * scale;
        }
        minimums += m * x.s[first + b];
    }
    lanes.iter().sum::<f32>() + minimums
}

/// The sixteen pairwise sums of `q(j)·x(j) + q(j+16)·x(j+16)` of a block.
#[inline(always)]
fn block_products(nibbles: &[u8; BLOCK / 2], x: &[i8; BLOCK]) -> [i32; BLOCK / 2] {
    let mut out = [0i32; BLOCK / 2];
    for j in 0..BLOCK / 2 {
        let (low, high) = ((nibbles[j] & 0x0F) as i32, (nibbles[j] >> 4) as i32);
        out[j] = low * x[j] as i32 + high * x[j + BLOCK / 2] as i32;
    }
    out
}

#[inline(always)]
fn half(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn matches_the_dequantized_product_within_the_activations_quantization() {
        let dev = Device::Cpu;
        let (out, inputs, rows) = (200, 96, 3);
        let w = Tensor::randn(0f32, 1., (out, inputs), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let x = Tensor::randn(0f32, 1., (rows, inputs), &dev).unwrap();
        let exact = x.matmul(&q.dequantize(&dev).unwrap().t().unwrap()).unwrap();
        let ours = matmul(
            &q.data().unwrap(),
            out,
            inputs,
            &x.flatten_all().unwrap().to_vec1().unwrap(),
        );
        let exact: Vec<f32> = exact.flatten_all().unwrap().to_vec1().unwrap();
        let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
        let worst = exact
            .iter()
            .zip(&ours)
            .fold(0f32, |a, (e, o)| a.max((e - o).abs()));
        assert!(worst < 0.02 * scale, "{worst} of {scale}");
        // The portable code gives what the vector instructions give.
        let data = q.data().unwrap();
        let x = Q8Rows::quantize(&x.flatten_all().unwrap().to_vec1().unwrap(), inputs);
        for (o, w) in data.chunks_exact(data.len() / out).enumerate() {
            for r in 0..rows {
                let portable = dot(w, &x, r);
                assert!((portable - ours[r * out + o]).abs() < 1e-4 * scale);
            }
        }
    }
}
