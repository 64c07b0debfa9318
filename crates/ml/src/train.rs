//! The training loop shared by LoRA fine-tuning and pre-training: AdamW, linear warm-up then cosine
//! decay, global gradient-norm clipping, and held-out evaluation.
//!
//! The loop reports every step through a callback and leaves drawing to the caller, so the CLI's
//! progress bar, the job API and the tests all drive the same code.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{D, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Example};
use crate::error::{MlError, Result};
use crate::fused;
use crate::llama::Llama;

/// Optimiser and schedule settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Peak learning rate.
    pub lr: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many steps even if epochs remain.
    pub max_steps: Option<usize>,
    /// Fraction of the steps spent warming the learning rate up from zero.
    pub warmup: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Gradients are scaled down to this global L2 norm when they exceed it.
    pub max_grad_norm: f64,
    /// Seed of the batch order.
    pub seed: u64,
    /// Keep only each layer's input from the forward pass and compute its activations again when
    /// the backward pass reaches it (see [`loss_and_grads`]): a third more arithmetic for a
    /// fraction of the memory. QLoRA always trains this way.
    #[serde(default)]
    pub gradient_checkpointing: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            batch_size: 8,
            epochs: 1,
            max_steps: None,
            warmup: 0.05,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 0,
            gradient_checkpointing: false,
        }
    }
}

/// What is called after every step with its [`Progress`]; answering `Break` stops training
/// there (a cancelled job), and the run fails with [`MlError::Stopped`].
pub type OnStep<'a> = dyn FnMut(&Progress) -> std::ops::ControlFlow<()> + 'a;

/// An [`OnStep`] that watches nothing and never stops.
pub fn unwatched(_: &Progress) -> std::ops::ControlFlow<()> {
    std::ops::ControlFlow::Continue(())
}

/// What the loop reports after each step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Steps done, from 1.
    pub step: usize,
    /// Steps the run will take.
    pub total_steps: usize,
    /// Training loss of this step's batch.
    pub loss: f64,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Target tokens per second since the start.
    pub tokens_per_sec: f64,
}

/// Loss and perplexity on held-out examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy per target token, in nats.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Target tokens evaluated.
    pub tokens: usize,
}

/// The outcome of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Steps taken.
    pub steps: usize,
    /// Target tokens trained on.
    pub tokens: usize,
    /// Wall-clock seconds of the loop.
    pub seconds: f64,
    /// Target tokens per second.
    pub tokens_per_sec: f64,
    /// Every step's progress, the loss curve.
    pub curve: Vec<Progress>,
}

/// Mean cross-entropy of the batch's real target tokens.
pub fn batch_loss(model: &Llama, batch: &Batch) -> Result<Tensor> {
    let (sum, tokens) = summed_loss(model, batch)?;
    Ok((sum / tokens as f64)?)
}

fn summed_loss(model: &Llama, batch: &Batch) -> Result<(Tensor, usize)> {
    let logits = model.forward(&batch.inputs)?;
    let logits = logits.reshape(((), logits.dim(D::Minus1)?))?;
    let nll = fused::cross_entropy(&logits, &batch.targets)?;
    Ok(((nll * batch.mask.flatten_all()?)?.sum_all()?, batch.tokens))
}

/// Rows of logits [`loss_and_grads`] computes at once: 512 rows of a 49,152-token vocabulary
/// are 96 MiB, where a batch of 8 × 256 rows would be 384 MiB, and its gradient as much again.
const HEAD_ROWS: usize = 512;

/// The batch's mean loss (as [`batch_loss`]) and its gradients for `vars`.
///
/// The head's logits and loss are computed a slice of [`HEAD_ROWS`] rows at a time, each slice's
/// backward pass giving its part of the last layer's output gradient, which then goes back
/// through the layers. With `checkpoint` (gradient checkpointing), the forward pass keeps only
/// each layer's input; from the last layer down, each layer runs forward again from its input
/// and its backward pass (of its output times the gradient from above) gives its own variables'
/// gradients and its input's, which the layer below takes up: one layer's activations are held
/// at a time instead of all of them, for about a third more arithmetic.
pub fn loss_and_grads(
    model: &Llama,
    batch: &Batch,
    vars: &[Var],
    checkpoint: bool,
) -> Result<(f32, GradStore)> {
    // On one of rayon's workers, as `Llama::forward_batch` runs: the ops share their work with
    // the other workers directly, rather than a third thread handing each op to the pool and
    // waiting for it while the workers spin.
    rayon::scope(|_| step_grads(model, batch, vars, checkpoint))
}

fn step_grads(
    model: &Llama,
    batch: &Batch,
    vars: &[Var],
    checkpoint: bool,
) -> Result<(f32, GradStore)> {
    let mut inputs = Vec::new();
    let mut x = model.embed(&batch.inputs)?;
    for layer in 0..model.config().num_hidden_layers {
        if checkpoint {
            let next = model.layer(layer, &x)?.detach();
            inputs.push(std::mem::replace(&mut x, next));
        } else {
            x = model.layer(layer, &x)?;
        }
    }
    let (b, s, h) = x.dims3()?;
    let top = x.reshape((b * s, h))?.detach();
    let (targets, mask) = (batch.targets.flatten_all()?, batch.mask.flatten_all()?);
    let scale = 1.0 / batch.tokens as f64;
    let (mut loss, mut upstream, mut total) = (0f32, Vec::new(), None);
    for start in (0..b * s).step_by(HEAD_ROWS) {
        let len = HEAD_ROWS.min(b * s - start);
        let rows = Var::from_tensor(&top.narrow(0, start, len)?)?;
        let nll = fused::cross_entropy(&model.head(&rows)?, &targets.narrow(0, start, len)?)?;
        let part = ((nll * mask.narrow(0, start, len)?)?.sum_all()? * scale)?;
        loss += part.to_scalar::<f32>()?;
        let mut grads = part.backward()?;
        upstream.push(input_grad(&mut grads, &rows)?);
        gather(&mut total, grads, vars)?;
    }
    let mut upstream = Tensor::cat(&upstream, 0)?.reshape((b, s, h))?;
    if !checkpoint {
        gather(&mut total, (x * upstream)?.sum_all()?.backward()?, vars)?;
        return Ok((loss, total.expect("a batch has rows")));
    }
    for (layer, input) in inputs.iter().enumerate().rev() {
        let input = Var::from_tensor(input)?;
        let output = model.layer(layer, &input)?;
        let mut grads = (output * &upstream)?.sum_all()?.backward()?;
        upstream = input_grad(&mut grads, &input)?;
        gather(&mut total, grads, vars)?;
    }
    // The embedding's gradient, for a run that trains it.
    let embedded = model.embed(&batch.inputs)?;
    gather(
        &mut total,
        (embedded * upstream)?.sum_all()?.backward()?,
        vars,
    )?;
    Ok((loss, total.expect("a batch has rows")))
}

fn input_grad(grads: &mut GradStore, input: &Var) -> Result<Tensor> {
    grads
        .remove(input)
        .ok_or_else(|| MlError::Config("no gradient reached a checkpointed layer's input".into()))
}

/// Adds the gradients `part` holds for `vars` into `total` (the first part becomes it: candle
/// has no empty gradient store to start from).
fn gather(total: &mut Option<GradStore>, mut part: GradStore, vars: &[Var]) -> Result<()> {
    let Some(total) = total else {
        *total = Some(part);
        return Ok(());
    };
    for var in vars {
        if let Some(grad) = part.remove(var) {
            let sum = match total.remove(var) {
                Some(earlier) => (earlier + grad)?,
                None => grad,
            };
            total.insert(var, sum);
        }
    }
    Ok(())
}

/// Loss and perplexity of `model` on `examples`, token-weighted.
pub fn evaluate(model: &Llama, examples: &[Example], batch_size: usize) -> Result<Evaluation> {
    let (mut total, mut tokens) = (0f64, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = Batch::new(&refs, model.device())?;
        let (sum, n) = summed_loss(model, &batch)?;
        total += sum.detach().to_scalar::<f32>()? as f64;
        tokens += n;
    }
    if tokens == 0 {
        return Err(MlError::Input("no held-out tokens to evaluate".into()));
    }
    let loss = total / tokens as f64;
    Ok(Evaluation {
        loss,
        perplexity: loss.exp(),
        tokens,
    })
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up over `warmup_steps`, then cosine
/// decay to zero.
pub fn learning_rate(step: usize, total: usize, warmup_steps: usize, peak: f64) -> f64 {
    if step < warmup_steps {
        return peak * (step + 1) as f64 / warmup_steps as f64;
    }
    let span = total.saturating_sub(warmup_steps).max(1) as f64;
    let progress = ((step - warmup_steps) as f64 / span).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Number of steps `options` take over `examples` training examples.
pub fn total_steps(examples: usize, options: &TrainOptions) -> usize {
    let per_epoch = examples.div_ceil(options.batch_size.max(1));
    let steps = per_epoch * options.epochs;
    options.max_steps.map_or(steps, |max| steps.min(max))
}

/// Trains `vars` (the model's trainable tensors) on `examples`.
pub fn train(
    model: &Llama,
    vars: Vec<Var>,
    examples: &[Example],
    options: &TrainOptions,
    progress: &mut OnStep<'_>,
) -> Result<RunStats> {
    if options.batch_size == 0 || options.epochs == 0 || options.lr.is_nan() || options.lr <= 0.0 {
        return Err(MlError::Config(
            "batch size, epochs and learning rate must be positive".into(),
        ));
    }
    if examples.is_empty() {
        return Err(MlError::Input("no training examples".into()));
    }
    let total = total_steps(examples.len(), options);
    let warmup_steps = (total as f64 * options.warmup).ceil() as usize;
    let params = ParamsAdamW {
        lr: options.lr,
        weight_decay: options.weight_decay,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(vars.clone(), params)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
    let start = Instant::now();
    let (mut step, mut tokens, mut curve) = (0, 0, Vec::with_capacity(total));
    'epochs: loop {
        for chunk in length_grouped_batches(examples, options.batch_size, &mut rng) {
            if step == total {
                break 'epochs;
            }
            let batch = Batch::new(&chunk, model.device())?;
            let checkpoint = options.gradient_checkpointing;
            let (loss, mut grads) = loss_and_grads(model, &batch, &vars, checkpoint)?;
            let grad_norm = clip(&mut grads, &vars, options.max_grad_norm)?;
            let lr = learning_rate(step, total, warmup_steps, options.lr);
            optimizer.set_learning_rate(lr);
            optimizer.step(&grads)?;
            step += 1;
            tokens += batch.tokens;
            let report = Progress {
                step,
                total_steps: total,
                loss: f64::from(loss),
                lr,
                grad_norm,
                tokens_per_sec: tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
            };
            let flow = progress(&report);
            curve.push(report);
            if flow.is_break() {
                return Err(MlError::Stopped { step });
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(RunStats {
        steps: step,
        tokens,
        seconds,
        tokens_per_sec: tokens as f64 / seconds.max(1e-9),
        curve,
    })
}

/// One epoch's batches: examples shuffled, then sorted by length within groups of
/// [`LENGTH_GROUP`] batches so that a batch pads little, then the batches shuffled. Rows are short
/// and uneven, so this roughly halves the padded positions a step computes.
fn length_grouped_batches<'a>(
    examples: &'a [Example],
    batch_size: usize,
    rng: &mut impl rand::Rng,
) -> Vec<Vec<&'a Example>> {
    let mut order: Vec<&Example> = examples.iter().collect();
    order.shuffle(rng);
    let mut batches: Vec<Vec<&Example>> = Vec::with_capacity(order.len().div_ceil(batch_size));
    for group in order.chunks_mut(batch_size * LENGTH_GROUP) {
        group.sort_by_key(|e| std::cmp::Reverse(e.tokens.len()));
        batches.extend(group.chunks(batch_size).map(<[_]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// Batches per group sorted by length in [`length_grouped_batches`].
const LENGTH_GROUP: usize = 16;

/// Scales the gradients of `vars` to a global L2 norm of at most `max_norm`; returns the norm
/// before scaling.
fn clip(grads: &mut candle_core::backprop::GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut squares = 0f64;
    for var in vars {
        if let Some(g) = grads.get(var) {
            squares += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = squares.sqrt();
    if norm > max_norm && max_norm > 0.0 {
        let factor = max_norm / norm;
        for var in vars {
            if let Some(g) = grads.remove(var) {
                grads.insert(var, (g * factor)?);
            }
        }
    }
    Ok(norm)
}

/// The process's peak resident memory in bytes (Linux `VmHWM`), `None` elsewhere.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full training (every weight, the embedding and head included) and LoRA alike: the loss
    /// and gradients of the head taken in slices, with and without checkpointing, are one
    /// backward pass's, over more rows than one slice and with padded rows.
    #[test]
    fn sliced_and_checkpointed_gradients_are_the_plain_ones() -> Result<()> {
        use crate::checkpoint::{make_trainable, random_weights};
        use crate::{Adapter, Device, LoraConfig, ModelConfig};
        let config = ModelConfig::llama(61, 32, 2, 4, 2);
        let examples: Vec<Example> = (0..3)
            .map(|row| {
                let tokens = (0..=230 - row * 20).map(|i| ((i * 13 + row) % 61) as u32);
                Example::plain(row, tokens.collect())
            })
            .collect();
        let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), &Device::Cpu)?;
        assert!(batch.inputs.elem_count() > HEAD_ROWS);
        let compare = |model: &Llama, vars: &[Var]| -> Result<()> {
            let loss = batch_loss(model, &batch)?;
            let plain = loss.backward()?;
            for checkpoint in [false, true] {
                let (sliced_loss, sliced) = loss_and_grads(model, &batch, vars, checkpoint)?;
                assert!((loss.to_scalar::<f32>()? - sliced_loss).abs() < 1e-5);
                for var in vars {
                    let (want, got) = (plain.get(var).unwrap(), sliced.get(var).unwrap());
                    let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
                    let diff = (want - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(
                        diff <= 1e-4 * scale,
                        "{:?}: off by {diff} of {scale}",
                        var.shape()
                    );
                }
            }
            Ok(())
        };
        let mut weights = random_weights(&config, 2, &Device::Cpu)?;
        let vars = make_trainable(&mut weights)?;
        compare(&Llama::new(config.clone(), &weights)?, &vars)?;

        let mut model = Llama::new(config.clone(), &random_weights(&config, 2, &Device::Cpu)?)?;
        let lora = LoraConfig::new(4, 8.0, "q,v,down")?;
        let mut adapter = Adapter::init(&config, lora, 3, &Device::Cpu)?;
        let vars = adapter.make_trainable()?;
        // B starts at zero, which would leave A without a gradient to compare: move it off.
        for var in &vars {
            var.set(&(var.as_tensor() + 0.05)?)?;
        }
        adapter.apply(&mut model)?;
        compare(&model, &vars)
    }

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        let lr: Vec<f64> = (0..10).map(|s| learning_rate(s, 10, 2, 1.0)).collect();
        assert_eq!(&lr[..3], &[0.5, 1.0, 1.0]);
        assert!(lr.windows(2).skip(2).all(|w| w[1] < w[0]), "{lr:?}");
        assert!(learning_rate(10, 10, 2, 1.0).abs() < 1e-12);
    }

    #[test]
    fn length_grouping_covers_every_example_once_and_pads_little() {
        let examples: Vec<Example> = (0..100)
            .map(|row| Example::plain(row, vec![0; 2 + row % 37]))
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let batches = length_grouped_batches(&examples, 8, &mut rng);
        let mut rows: Vec<usize> = batches.iter().flatten().map(|e| e.row).collect();
        rows.sort();
        assert_eq!(rows, (0..100).collect::<Vec<_>>());
        let padded: usize = batches
            .iter()
            .map(|b| b.len() * b.iter().map(|e| e.tokens.len()).max().unwrap())
            .sum();
        let real: usize = examples.iter().map(|e| e.tokens.len()).sum();
        assert!(
            padded < real * 12 / 10,
            "{padded} padded positions for {real} tokens"
        );
    }

    #[test]
    fn steps_are_capped_by_max_steps() {
        let options = TrainOptions {
            batch_size: 4,
            epochs: 3,
            ..Default::default()
        };
        assert_eq!(total_steps(10, &options), 9);
        assert_eq!(
            total_steps(
                10,
                &TrainOptions {
                    max_steps: Some(5),
                    ..options
                }
            ),
            5
        );
    }
}
