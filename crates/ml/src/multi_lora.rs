//! LoRA updates as the forward pass applies them: one low-rank update on a linear layer
//! ([`LoraWeights`]), an adapter's updates by layer and projection ([`LoraSet`]), and many
//! adapters over one batch in one pass, each row with its own adapter's update (Punica's BGMV
//! kernel, on the CPU).
//!
//! A batch's base projection is one matrix product whatever its adapters. The updates `x·Aᵀ·Bᵀ`
//! are small per row (rank × (in + out) multiply-adds), so as candle ops (a slice, two products
//! and an add for each adapter, then a concatenation) their dispatch costs far more than their
//! arithmetic once a batch holds dozens of adapters. This op does them all in one pass that reads
//! every adapter's factors in place. Serving only: it has no backward.

use std::borrow::Cow;
use std::ops::Range;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Storage, Tensor, bail};

use crate::config::PROJECTIONS;
use crate::error::Result;
use crate::fused::{dot, elements, vectorized};

/// A low-rank update `scale · B·A` added to a linear layer's output.
#[derive(Clone, Debug)]
pub struct LoraWeights {
    /// `rank × in`.
    pub a: Tensor,
    /// `out × rank`.
    pub b: Tensor,
    /// `alpha / rank`.
    pub scale: f64,
}

impl LoraWeights {
    /// `x·Aᵀ·(scale·B)ᵀ` for rows `x`, scaling the small `out × rank` factor rather than the
    /// `rows × out` product.
    pub(crate) fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let down = x.matmul(&self.a.t()?)?;
        Ok(if self.scale == 1.0 {
            down.matmul(&self.b.t()?)?
        } else {
            down.matmul(&(&self.b * self.scale)?.t()?)?
        })
    }
}

/// An adapter ready to serve: its updates by layer and by projection (in [`PROJECTIONS`] order).
#[derive(Clone, Debug, Default)]
pub struct LoraSet {
    layers: Vec<[Option<LoraWeights>; PROJECTIONS.len()]>,
    bytes: usize,
}

impl LoraSet {
    /// The update of `layer`'s projection number `projection` ([`PROJECTIONS`] order), if any.
    pub fn get(&self, layer: usize, projection: usize) -> Option<&LoraWeights> {
        self.layers.get(layer)?.get(projection)?.as_ref()
    }

    /// Sets the update of `layer`'s projection number `projection`.
    pub(crate) fn insert(&mut self, layer: usize, projection: usize, lora: LoraWeights) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, Default::default());
        }
        self.bytes += (lora.a.elem_count() + lora.b.elem_count()) * lora.a.dtype().size_in_bytes();
        self.layers[layer][projection] = Some(lora);
    }

    /// Bytes its tensors take, what an adapter cache counts against its budget.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

/// A LoRA update applied to a range of rows of a batch.
#[derive(Clone, Debug)]
pub struct RowDelta<'a> {
    /// The rows, in the batch's row order.
    pub rows: Range<usize>,
    /// The update.
    pub lora: &'a LoraWeights,
}

/// The updates of `projection` in `layer` for each run of consecutive sequences (their `rows`)
/// that share an adapter.
pub(crate) fn row_deltas<'a>(
    adapters: &[Option<&'a LoraSet>],
    rows: &[Range<usize>],
    layer: usize,
    projection: usize,
) -> Vec<RowDelta<'a>> {
    let mut deltas: Vec<RowDelta<'a>> = Vec::new();
    for (adapter, r) in adapters.iter().zip(rows) {
        let Some(lora) = adapter.and_then(|a| a.get(layer, projection)) else {
            continue;
        };
        match deltas.last_mut() {
            Some(last) if std::ptr::eq(last.lora, lora) && last.rows.end == r.start => {
                last.rows.end = r.end;
            }
            _ => deltas.push(RowDelta {
                rows: r.clone(),
                lora,
            }),
        }
    }
    deltas
}

/// `y` (`rows × out`) plus, on each of `deltas`' rows, that delta's `scale · x·Aᵀ·Bᵀ` for rows
/// `x` (`rows × in`).
pub fn add_deltas(x: &Tensor, y: &Tensor, deltas: &[RowDelta<'_>]) -> Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op2_no_bwd(&y.contiguous()?, &AddDeltas(deltas))?)
}

struct AddDeltas<'a, 'b>(&'b [RowDelta<'a>]);

impl CustomOp2 for AddDeltas<'_, '_> {
    fn name(&self) -> &'static str {
        "multi-lora"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, inputs) = xl.shape().dims2()?;
        let (y_rows, outputs) = yl.shape().dims2()?;
        if rows != y_rows {
            bail!("multi-lora: {rows} input rows but {y_rows} output rows");
        }
        let x = elements(xs, xl, "multi-lora")?;
        let mut y = elements(ys, yl, "multi-lora")?.to_vec();
        for delta in self.0 {
            if delta.rows.end > rows {
                bail!("multi-lora: rows {:?} of a batch of {rows}", delta.rows);
            }
            let (a_storage, a_layout) = delta.lora.a.storage_and_layout();
            let (b_storage, b_layout) = delta.lora.b.storage_and_layout();
            let (rank, a_inputs) = a_layout.shape().dims2()?;
            if a_inputs != inputs || b_layout.shape().dims2()? != (outputs, rank) {
                bail!(
                    "multi-lora: factors {:?} and {:?} do not fit a {inputs} to {outputs} layer",
                    a_layout.dims(),
                    b_layout.dims()
                );
            }
            let a = cpu(&a_storage, a_layout)?;
            let scale = delta.lora.scale as f32;
            // `B` column by column (`rank × out`), so that each row's update is `rank` runs of
            // `y += d·column` over contiguous memory rather than `out` dot products of `rank`:
            // as stored when the adapter was made ready to serve, else rearranged here.
            let columns: Cow<[f32]> = match cpu(&b_storage, &b_layout.transpose(0, 1)?) {
                Ok(columns) => Cow::Borrowed(columns),
                Err(_) => {
                    let b = cpu(&b_storage, b_layout)?;
                    let mut columns = vec![0f32; rank * outputs];
                    for (o, b) in b.chunks_exact(rank).enumerate() {
                        for (r, &b) in b.iter().enumerate() {
                            columns[r * outputs + o] = b;
                        }
                    }
                    Cow::Owned(columns)
                }
            };
            let mut down = vec![0f32; rank];
            vectorized(
                #[inline(always)]
                || {
                    for row in delta.rows.clone() {
                        let x = &x[row * inputs..][..inputs];
                        for (d, a) in down.iter_mut().zip(a.chunks_exact(inputs)) {
                            *d = scale * dot(a, x);
                        }
                        let y = &mut y[row * outputs..][..outputs];
                        for (&d, column) in down.iter().zip(columns.chunks_exact(outputs)) {
                            for (y, c) in y.iter_mut().zip(column) {
                                *y += d * c;
                            }
                        }
                    }
                },
            );
        }
        Ok((CpuStorage::F32(y), yl.shape().clone()))
    }
}

fn cpu<'a>(storage: &'a Storage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match storage {
        Storage::Cpu(s) => elements(s, layout, "multi-lora"),
        _ => bail!("multi-lora: LoRA factors must be on the CPU"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        let n = shape.0 * shape.1;
        let values =
            (0..n).map(|i| ((i as u64 * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0);
        Tensor::from_vec(values.collect(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn each_row_gets_its_own_adapters_update() {
        let (rows, inputs, outputs, rank) = (5, 19, 11, 3);
        let x = random((rows, inputs), 1);
        let y = random((rows, outputs), 2);
        let lora = |seed| LoraWeights {
            a: random((rank, inputs), seed),
            b: random((outputs, rank), seed + 1),
            scale: 0.5,
        };
        let (first, mut second) = (lora(3), lora(5));
        // The second `B` column by column, as a served adapter stores it.
        second.b = second.b.t().unwrap().contiguous().unwrap().t().unwrap();
        let deltas = [
            RowDelta {
                rows: 0..2,
                lora: &first,
            },
            RowDelta {
                rows: 3..5,
                lora: &second,
            },
        ];
        let got = add_deltas(&x, &y, &deltas)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let update = |l: &LoraWeights, r: Range<usize>| {
            let x = x.narrow(0, r.start, r.len()).unwrap();
            let d = x
                .matmul(&l.a.t().unwrap())
                .unwrap()
                .matmul(&l.b.t().unwrap());
            (d.unwrap() * l.scale).unwrap()
        };
        let expected = Tensor::cat(
            &[
                (y.narrow(0, 0, 2).unwrap() + update(&first, 0..2)).unwrap(),
                y.narrow(0, 2, 1).unwrap(),
                (y.narrow(0, 3, 2).unwrap() + update(&second, 3..5)).unwrap(),
            ],
            0,
        )
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
        for (g, e) in got.iter().flatten().zip(expected.iter().flatten()) {
            assert!((g - e).abs() < 1e-5, "{g} vs {e}");
        }
    }

    #[test]
    fn factors_of_the_wrong_shape_are_refused() {
        let lora = LoraWeights {
            a: random((2, 7), 1),
            b: random((4, 2), 2),
            scale: 1.0,
        };
        let deltas = [RowDelta {
            rows: 0..1,
            lora: &lora,
        }];
        let error = add_deltas(&random((1, 8), 3), &random((1, 4), 4), &deltas).unwrap_err();
        assert!(error.to_string().contains("do not fit"), "{error}");
    }
}
