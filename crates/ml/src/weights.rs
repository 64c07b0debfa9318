//! Named weights: a checkpoint's or an adapter's tensors in Hugging Face's naming, their
//! safetensors files, and the view under a prefix that each layer loads its own weights from.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{MlError, Result};
use crate::quant::{Matrix, QWeights};

/// Named weights in Hugging Face's naming, as a checkpoint stores them.
pub type Weights = HashMap<String, Tensor>;

/// Reads one safetensors file as f32 tensors.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<Weights> {
    let bytes = std::fs::read(path).map_err(|e| MlError::io(path, e))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        MlError::Safetensors {
            path: path.into(),
            reason: e.to_string(),
        }
    })?;
    tensors
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?)))
        .collect()
}

/// Writes tensors to a safetensors file with the `format: pt` metadata transformers expects.
pub fn write_safetensors(path: &Path, tensors: &Weights) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let contiguous: Vec<(&String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k, t.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(contiguous, Some(metadata), path).map_err(|e| {
        MlError::Safetensors {
            path: path.into(),
            reason: e.to_string(),
        }
    })
}

/// `w` (`rows × columns`) with the same shape and values, stored column by column: its transpose
/// is contiguous, the layout the inference kernels read.
pub(crate) fn column_major(w: &Tensor) -> Result<Tensor> {
    Ok(w.t()?.contiguous()?.t()?)
}

/// The weights under one name prefix, as a layer's `load` reads them: candle-nn's `VarBuilder`
/// over weights already in memory, so that each layer names only its own part
/// (`model.layers.3` hands its attention `model.layers.3.self_attn`).
#[derive(Clone, Debug)]
pub(crate) struct WeightsAt<'a> {
    weights: &'a Weights,
    quantized: Option<&'a QWeights>,
    prefix: String,
}

impl<'a> WeightsAt<'a> {
    /// All of `weights`, under no prefix.
    pub(crate) fn new(weights: &'a Weights, quantized: Option<&'a QWeights>) -> Self {
        Self {
            weights,
            quantized,
            prefix: String::new(),
        }
    }

    /// The weights under `name` in this prefix.
    pub(crate) fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            weights: self.weights,
            quantized: self.quantized,
            prefix: self.name(name),
        }
    }

    /// The matrix `name` in this prefix, quantized if the checkpoint has it so.
    pub(crate) fn matrix(&self, name: &str) -> Result<Matrix> {
        match self.quantized.and_then(|q| q.get(&self.name(name))) {
            Some(q) => Ok(Matrix::Quantized(q.clone())),
            None => self.get(name).map(Matrix::Dense),
        }
    }

    /// The tensor `name` in this prefix.
    pub(crate) fn get(&self, name: &str) -> Result<Tensor> {
        let name = self.name(name);
        self.weights
            .get(&name)
            .cloned()
            .ok_or(MlError::MissingTensor { name })
    }

    fn name(&self, name: impl std::fmt::Display) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}
