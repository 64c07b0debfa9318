//! Weight matrices kept in GGUF block quantization (Q4_0, Q4_1, Q8_0, the k-quants …), as OpenLoRA
//! serves a base and QLoRA trains over one: a product with such a weight never materialises it
//! whole in f32.
//!
//! A product over a few rows with no gradient (a decode step) runs candle's quantized dot kernels,
//! llama.cpp's approach: the activations are quantized to 8 bits and multiplied block by block.
//! A product over many rows, or one whose input needs a gradient, dequantizes the weight a tile of
//! [`TILE_ROWS`] output rows at a time into a dense product, in the forward pass and again in the
//! backward pass for the input's gradient; the frozen weight itself gets none.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{MlError, Result};

mod q4_1;

/// Quantized weights by their Hugging Face name, beside the dense [`crate::Weights`].
pub type QWeights = HashMap<String, Arc<QTensor>>;

/// Output rows of a quantized weight dequantized at a time: a tile of a SmolLM2 projection is
/// half a megabyte to a megabyte and a half of f32, small beside the whole.
const TILE_ROWS: usize = 256;
/// Rows of a tile one worker dequantizes at a time.
const DEQUANTIZED_ROWS: usize = 16;

/// Products over at most this many rows, with no gradient, run on the quantized dot kernels: up
/// to a full batch of decode steps, whose dot products cost less than dequantizing the weight.
const DOT_ROWS: usize = 32;

/// The block quantization `--qlora` gives a dense base's projections.
pub const QLORA_DTYPE: GgmlDType = GgmlDType::Q4_0;

/// A weight matrix as the model holds it: f32, or quantized in GGUF blocks along its rows.
#[derive(Clone, Debug)]
pub enum Matrix {
    /// An f32 tensor.
    Dense(Tensor),
    /// GGUF blocks, `out × in`, quantized along `in`.
    Quantized(Arc<QTensor>),
}

impl Matrix {
    /// `(out, in)`.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Self::Dense(t) => t.dims2()?,
            Self::Quantized(q) => q.shape().dims2()?,
        })
    }

    /// The dense tensor, if the matrix is one.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Self::Dense(t) => Some(t),
            Self::Quantized(_) => None,
        }
    }

    /// The rows `ids` of the matrix (an embedding lookup), in f32.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            // A table in the inference layout (see `Llama::for_inference`) is read by column.
            Self::Dense(t) if !t.is_contiguous() => {
                t.t()?.index_select(ids, 1)?.t()?.contiguous()?
            }
            Self::Dense(t) => t.embedding(ids)?,
            Self::Quantized(q) => q.embedding(ids)?,
        })
    }

    /// Bytes the matrix takes in memory.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Self::Quantized(q) => q.storage_size_in_bytes(),
        }
    }
}

/// `x · wᵀ` for `x` (`rows × in`, contiguous) and a quantized `w`, with the input's gradient when
/// `x` needs one.
pub fn quantized_linear(x: &Tensor, w: &Arc<QTensor>) -> candle_core::Result<Tensor> {
    if x.track_op() || x.dim(0)? > DOT_ROWS {
        x.apply_op1(Tiled { weight: w.clone() })
    } else if w.dtype() == GgmlDType::Q4_1 {
        x.apply_op1_no_bwd(&Q4_1Dot { weight: w.clone() })
    } else {
        x.apply_op1_no_bwd(w.as_ref())
    }
}

/// The rows `rows` of a quantized `out × in` matrix, dequantized (`rows × in`).
pub fn dequantize_rows(w: &QTensor, rows: Range<usize>) -> candle_core::Result<Tensor> {
    let (out, inputs) = w.shape().dims2()?;
    if rows.end > out {
        candle_core::bail!("rows {rows:?} of a matrix of {out}");
    }
    let dtype = w.dtype();
    let row_bytes = inputs / dtype.block_size() * dtype.type_size();
    let data = w.data()?;
    let data = &data[rows.start * row_bytes..rows.end * row_bytes];
    // A few rows to each worker: dequantized on one thread, a prompt's tiles left the other
    // core waiting for a quarter of the products' time.
    let mut values = vec![0f32; rows.len() * inputs];
    values
        .par_chunks_mut(DEQUANTIZED_ROWS * inputs)
        .zip(data.par_chunks(DEQUANTIZED_ROWS * row_bytes))
        .try_for_each(|(out, bytes)| {
            let blocks = dtype.from_data(Cow::Borrowed(bytes));
            let CpuStorage::F32(part) = blocks.dequantize(out.len())? else {
                candle_core::bail!("{dtype:?} blocks did not dequantize to f32");
            };
            out.copy_from_slice(&part);
            Ok(())
        })?;
    Tensor::from_vec(values, (rows.len(), inputs), &Device::Cpu)
}

/// `w` with its rows reordered: row `i` of the result is row `order[i]` of `w`, block bytes and
/// all (a row of blocks is a row of the matrix, as blocks run along the inputs).
pub fn reorder_rows(w: &QTensor, order: &[usize]) -> candle_core::Result<QTensor> {
    let (out, inputs) = w.shape().dims2()?;
    if order.len() != out || order.iter().any(|&r| r >= out) {
        candle_core::bail!("a reordering of {} rows for a matrix of {out}", order.len());
    }
    let dtype = w.dtype();
    let row_bytes = inputs / dtype.block_size() * dtype.type_size();
    let data = w.data()?;
    let bytes: Vec<u8> = order
        .iter()
        .flat_map(|&r| &data[r * row_bytes..(r + 1) * row_bytes])
        .copied()
        .collect();
    let storage =
        candle_core::quantized::QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, dtype)?;
    QTensor::new(storage, (out, inputs))
}

/// Moves every projection of `weights` (the `*_proj` and `lm_head` matrices) into quantized
/// blocks of `dtype`, for QLoRA over a dense checkpoint.
pub fn quantize_projections(weights: &mut crate::Weights, dtype: GgmlDType) -> Result<QWeights> {
    let names: Vec<String> = weights
        .keys()
        .filter(|n| is_projection(n))
        .cloned()
        .collect();
    for name in &names {
        let inputs = weights[name].dim(1)?;
        if inputs % dtype.block_size() != 0 {
            return Err(MlError::Config(format!(
                "{name} has {inputs} inputs, not a multiple of the {} of a {dtype:?} block: \
                 this model cannot be quantized for QLoRA",
                dtype.block_size()
            )));
        }
    }
    names
        .into_iter()
        .map(|name| {
            let dense = weights.remove(&name).expect("listed above");
            Ok((name, Arc::new(QTensor::quantize(&dense, dtype)?)))
        })
        .collect()
}

/// Whether a weight is one of the matrices quantization applies to: the projections and the head.
pub fn is_projection(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight"
}

/// The dot-product path of [`quantized_linear`] for Q4_1 weights ([`q4_1`]).
struct Q4_1Dot {
    weight: Arc<QTensor>,
}

impl CustomOp1 for Q4_1Dot {
    fn name(&self) -> &'static str {
        "q4_1-dot-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, inputs) = self.weight.shape().dims2()?;
        let x = contiguous_rows(storage, layout, inputs)?;
        let y = q4_1::matmul(&self.weight.data()?, out, inputs, x);
        Ok((CpuStorage::F32(y), Shape::from((x.len() / inputs, out))))
    }
}

/// The f32 rows of a contiguous `rows × inputs` input.
fn contiguous_rows<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    inputs: usize,
) -> candle_core::Result<&'a [f32]> {
    let (rows, columns) = layout.shape().dims2()?;
    if columns != inputs || !layout.is_contiguous() {
        candle_core::bail!(
            "quantized linear: input {:?} is not a contiguous matrix of {inputs} columns",
            layout.shape()
        );
    }
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("quantized linear: the input must be f32");
    };
    let start = layout.start_offset();
    Ok(&values[start..start + rows * inputs])
}

/// The tiles of `rows` rows.
fn tiles(rows: usize) -> impl Iterator<Item = Range<usize>> {
    (0..rows)
        .step_by(TILE_ROWS)
        .map(move |start| start..(start + TILE_ROWS).min(rows))
}

/// The tiled product of [`quantized_linear`], as a custom op so that its backward pass can
/// dequantize the weight again rather than keep it.
struct Tiled {
    weight: Arc<QTensor>,
}

impl CustomOp1 for Tiled {
    fn name(&self) -> &'static str {
        "quantized-tiled-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, inputs) = self.weight.shape().dims2()?;
        let values = contiguous_rows(storage, layout, inputs)?;
        let rows = values.len() / inputs;
        let x = Tensor::from_slice(values, (rows, inputs), &Device::Cpu)?;
        let parts = tiles(out)
            .map(|tile| x.matmul(&dequantize_rows(&self.weight, tile)?.t()?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let y = Tensor::cat(&parts, 1)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (out, _) = self.weight.shape().dims2()?;
        let mut grad: Option<Tensor> = None;
        for tile in tiles(out) {
            let dy = grad_res.narrow(1, tile.start, tile.len())?.contiguous()?;
            let part = dy.matmul(&dequantize_rows(&self.weight, tile)?)?;
            grad = Some(match grad {
                None => part,
                Some(sum) => (sum + part)?,
            });
        }
        Ok(grad)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn the_tiled_product_and_its_gradient_match_the_dequantized_weight() -> Result<()> {
        let dev = Device::Cpu;
        // 600 output rows: two whole tiles and a partial one.
        let dense = Tensor::randn(0f32, 1., (600, 64), &dev)?;
        let q = Arc::new(QTensor::quantize(&dense, GgmlDType::Q4_1)?);
        let w = q.dequantize(&dev)?;
        let x = Var::randn(0f32, 1., (40, 64), &dev)?;
        let reference = x.matmul(&w.t()?)?;
        let tiled = quantized_linear(&x, &q)?;
        assert!(max_diff(&reference, &tiled) < 1e-3);
        let g_ref = reference.sqr()?.sum_all()?.backward()?;
        let g_tiled = tiled.sqr()?.sum_all()?.backward()?;
        let (a, b) = (g_ref.get(&x).unwrap(), g_tiled.get(&x).unwrap());
        assert!(max_diff(a, b) < 1e-2 * a.abs()?.max_all()?.to_scalar::<f32>()?);
        Ok(())
    }

    #[test]
    fn a_decode_step_uses_the_quantized_kernels_within_their_error() -> Result<()> {
        let dev = Device::Cpu;
        let dense = Tensor::randn(0f32, 1., (64, 128), &dev)?;
        let q = Arc::new(QTensor::quantize(&dense, GgmlDType::Q8_0)?);
        let x = Tensor::randn(0f32, 1., (2, 128), &dev)?;
        let exact = x.matmul(&q.dequantize(&dev)?.t()?)?;
        let served = quantized_linear(&x, &q)?;
        let scale = exact.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max_diff(&exact, &served) < 2e-2 * scale);
        Ok(())
    }

    #[test]
    fn rows_reorder_and_dequantize_by_range() -> Result<()> {
        let dev = Device::Cpu;
        let dense = Tensor::randn(0f32, 1., (4, 32), &dev)?;
        let q = QTensor::quantize(&dense, GgmlDType::Q8_0)?;
        let reordered = reorder_rows(&q, &[2, 0, 3, 1])?;
        let all = q.dequantize(&dev)?;
        let want = all.index_select(&Tensor::new(&[2u32, 0, 3, 1], &dev)?, 0)?;
        assert_eq!(max_diff(&reordered.dequantize(&dev)?, &want), 0.0);
        assert_eq!(
            max_diff(&dequantize_rows(&q, 1..3)?, &all.narrow(0, 1, 2)?),
            0.0
        );
        assert!(reorder_rows(&q, &[0, 1]).is_err());
        Ok(())
    }

    #[test]
    fn projections_whose_inputs_do_not_fill_blocks_are_refused() {
        let dev = Device::Cpu;
        let mut weights = crate::Weights::from([(
            "model.layers.0.mlp.up_proj.weight".to_string(),
            Tensor::zeros((8, 48), candle_core::DType::F32, &dev).unwrap(),
        )]);
        let err = quantize_projections(&mut weights, QLORA_DTYPE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("up_proj") && err.contains("48"), "{err}");
    }
}
