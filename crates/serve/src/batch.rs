//! How a step's batch runs on the CPU's workers: in two halves side by side, each sequence's
//! logits handed on as soon as its half is done.

use openledger_ml::llama::BatchSeq;
use openledger_ml::{Llama, Result};

/// Runs one step of `seqs` and calls `then` with each sequence's index and logits, on the worker
/// that computed them: the engine samples and streams one half's next tokens there while the
/// other half computes, rather than after the step on one thread while the workers wait.
///
/// One stream of ops leaves workers idle at the end of every op, waiting for the slowest part of
/// it, and on a small model those gaps cost as much as the arithmetic; with two independent
/// streams a worker idle in one finds work in the other. Rows do not interact, so the halves
/// compute what one step would.
pub fn step_in_halves(
    model: &Llama,
    seqs: &mut [BatchSeq<'_>],
    then: &(dyn Fn(usize, &[f32]) + Sync),
) -> Result<()> {
    rayon::scope(|_| {
        if seqs.len() < 2 {
            return step_then(model, seqs, 0, then);
        }
        let half = middle(seqs);
        let (left, right) = seqs.split_at_mut(half);
        let (left, right) = rayon::join(
            || step_then(model, left, 0, then),
            || step_then(model, right, half, then),
        );
        left.and(right)
    })
}

/// Where to split `seqs` (at least two) so that each side has about half the rows, neither empty.
fn middle(seqs: &[BatchSeq<'_>]) -> usize {
    let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
    let mut rows = 0;
    let before_middle = seqs
        .iter()
        .take_while(|s| {
            rows += s.tokens.len();
            rows * 2 < total
        })
        .count();
    (before_middle + 1).min(seqs.len() - 1)
}

/// One step, then `then` for each sequence's logits, the first sequence numbered `first`.
fn step_then(
    model: &Llama,
    seqs: &mut [BatchSeq<'_>],
    first: usize,
    then: &(dyn Fn(usize, &[f32]) + Sync),
) -> Result<()> {
    let logits: Vec<f32> = model.forward_batch(seqs)?.flatten_all()?.to_vec1()?;
    for (i, row) in logits.chunks_exact(logits.len() / seqs.len()).enumerate() {
        then(first + i, row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use openledger_ml::checkpoint::random_weights;
    use openledger_ml::{Device, KvCache, ModelConfig};

    use super::*;

    /// Split in halves or not, a step hands each sequence the logits one batched step gives it.
    #[test]
    fn the_halves_give_each_sequence_the_logits_of_one_step() -> Result<()> {
        let config = ModelConfig::llama(40, 32, 2, 4, 2);
        let model = Llama::new(config.clone(), &random_weights(&config, 3, &Device::Cpu)?)?;
        let prompts: [&[u32]; 3] = [&[1, 2, 3, 4, 5, 6, 7], &[8, 9], &[10, 11, 12]];
        fn batch<'a>(caches: &'a mut [KvCache; 3], prompts: [&'a [u32]; 3]) -> Vec<BatchSeq<'a>> {
            caches
                .iter_mut()
                .zip(prompts)
                .map(|(cache, tokens)| BatchSeq {
                    tokens,
                    cache,
                    adapter: None,
                })
                .collect()
        }
        let mut caches = Default::default();
        let whole: Vec<Vec<f32>> = model
            .forward_batch(&mut batch(&mut caches, prompts))?
            .to_vec2()?;
        let mut caches = Default::default();
        let seen = Mutex::new(vec![Vec::new(); prompts.len()]);
        step_in_halves(&model, &mut batch(&mut caches, prompts), &|i, logits| {
            seen.lock().unwrap()[i] = logits.to_vec();
        })?;
        for (i, (got, want)) in seen.into_inner().unwrap().iter().zip(&whole).enumerate() {
            assert_eq!(got.len(), want.len(), "sequence {i}");
            let diff = got
                .iter()
                .zip(want)
                .map(|(g, w)| (g - w).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "sequence {i} differs by {diff}");
        }
        Ok(())
    }
}
