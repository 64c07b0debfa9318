//! The linear layer every projection of the model is, with the LoRA update an adapter adds to it.

use candle_core::Tensor;

use crate::error::{MlError, Result};
use crate::frozen::frozen_linear;
use crate::multi_lora::{self, LoraWeights, RowDelta};
use crate::quant::{Matrix, quantized_linear};
use crate::weights::{WeightsAt, column_major};

/// A linear layer `x·Wᵀ + b`, optionally with a LoRA update.
///
/// A weight that is not a training variable goes through [`frozen_linear`], so its gradient is
/// never computed; a quantized one is frozen too (see [`crate::quant`]).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Matrix,
    bias: Option<Tensor>,
    lora: Option<LoraWeights>,
}

impl Linear {
    /// The layer of `w.weight` (and `w.bias`, with `bias`).
    pub(crate) fn load(w: &WeightsAt<'_>, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: w.matrix("weight")?,
            bias: bias.then(|| w.get("bias")).transpose()?,
            lora: None,
        })
    }

    /// The layer of a weight held elsewhere too (a tied head is the embedding table).
    pub(crate) fn of(weight: Matrix) -> Self {
        Self {
            weight,
            bias: None,
            lora: None,
        }
    }

    /// The `out × in` weight.
    pub fn weight(&self) -> &Matrix {
        &self.weight
    }

    /// Lays the weight out for inference: its transpose contiguous (see `Llama::for_inference`).
    pub(crate) fn lay_out_for_inference(&mut self) -> Result<()> {
        if let Matrix::Dense(w) = &self.weight {
            self.weight = Matrix::Dense(column_major(w)?);
        }
        Ok(())
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
        let mut y = match &self.weight {
            Matrix::Dense(w) if w.track_op() => x.matmul(&w.t()?)?,
            Matrix::Dense(w) => frozen_linear(&x, w)?,
            Matrix::Quantized(q) => quantized_linear(&x, q)?,
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
