//! A matrix product with a frozen weight that costs nothing in the backward pass.
//!
//! candle's `matmul` backward always computes the gradient of both operands, so a LoRA step through
//! a plain `x.matmul(&w.t())` pays for the gradient of every frozen base weight, as much as a full
//! fine-tune. [`frozen_linear`] wraps the product in a custom op that holds the weight inside the op
//! rather than as an operand: the backward pass computes only the gradient of the input.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

/// `x @ wᵀ` over the last dimension of `x`, treating `w` (`out × in`) as a constant.
///
/// When `x` itself needs no gradient, candle records nothing, as for any op.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1(FrozenLinear { weight: w.detach() })
}

struct FrozenLinear {
    weight: Tensor,
}

impl FrozenLinear {
    fn output_shape(&self, input: &Shape) -> candle_core::Result<(Shape, usize, usize, usize)> {
        let (out, k) = self.weight.dims2()?;
        let dims = input.dims();
        match dims.last() {
            Some(&last) if last == k => {}
            _ => candle_core::bail!(
                "frozen linear: input {input:?} does not end in the weight's {k} columns"
            ),
        }
        let m = input.elem_count() / k;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("checked non-empty") = out;
        Ok((Shape::from(shape), m, out, k))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (shape, m, n, k) = self.output_shape(layout.shape())?;
        if !layout.is_contiguous() {
            candle_core::bail!("frozen linear: the input must be contiguous");
        }
        let lhs = Layout::contiguous_with_offset((m, k), layout.start_offset());
        let transposed = self.weight.t()?;
        let (weight, weight_layout) = transposed.storage_and_layout();
        let Storage::Cpu(weight) = &*weight else {
            candle_core::bail!("frozen linear: the weight is not on the CPU");
        };
        let out = storage.matmul(weight, (1, m, n, k), &lhs, weight_layout)?;
        Ok((out, shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        let n = self.weight.dim(0)?;
        let rows = grad.elem_count() / n;
        let grad_in = grad.reshape((rows, n))?.matmul(&self.weight)?;
        let mut dims = grad.dims().to_vec();
        *dims.last_mut().expect("gradient has the output's rank") = self.weight.dim(1)?;
        Ok(Some(grad_in.reshape(dims)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn matches_matmul_and_its_input_gradient() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (5, 3), &dev)?;
        let x = Var::randn(0f32, 1., (2, 4, 3), &dev)?;
        let reference = x.broadcast_matmul(&w.t()?)?;
        let frozen = frozen_linear(&x, &w)?;
        let diff = (&reference - &frozen)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");

        let g_ref = reference.sqr()?.sum_all()?.backward()?;
        let g_frozen = frozen.sqr()?.sum_all()?.backward()?;
        let (a, b) = (g_ref.get(&x).unwrap(), g_frozen.get(&x).unwrap());
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "input gradient differs by {diff}");
        assert!(
            g_frozen.get(&w).is_none(),
            "no gradient is computed for the frozen weight"
        );
        Ok(())
    }
}
