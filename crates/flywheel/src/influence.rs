//! Gradient influence: training records the training rows' sketched gradients next to the
//! adapter (`influence.bin`), and a loaded [`InfluenceModel`] scores a text against them.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use openledger_attribution::{
    GradientRow, GradientStore, INFLUENCE_FILE, Influence, Sketch, fingerprint,
};
use openledger_ml::factory::FineTune;
use openledger_ml::gradients::ExampleGradients;
use openledger_ml::lora::ADAPTER_WEIGHTS_FILE;

/// Buckets per LoRA module in the stored sketches: 16 modules of the default targets on the dev
/// model make 4,096 numbers per training row.
pub const DEFAULT_DIMS: usize = 256;

/// The identity of an adapter that a gradient store records: a digest of its weights, so that a
/// store is never read against an adapter retrained since.
fn adapter_identity(adapter: &Path) -> anyhow::Result<String> {
    let path = adapter.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
    Ok(fingerprint(&bytes))
}

/// Computes the sketched gradient of every training row of the finished `job` and writes them to
/// `influence.bin` in its output directory; returns the store.
pub fn record(job: &FineTune, dims: usize, quiet: bool) -> anyhow::Result<GradientStore> {
    let started = Instant::now();
    let gradients = ExampleGradients::load(&job.base, &job.out)?;
    let (rows, examples) = job.training_set(gradients.config())?;
    let sketch = Sketch {
        seed: job.train.seed,
        dims,
    };
    let mut store = GradientStore::new(
        sketch,
        gradients.groups().to_vec(),
        adapter_identity(&job.out)?,
    )?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(examples.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} influence: gradients of {pos}/{len} rows {bar}")
            .expect("valid template"),
    );
    for example in &examples {
        let row = &rows[example.row];
        let projected = sketch.project_all(&gradients.of_example(example)?);
        let id = GradientRow {
            row: row.id.clone(),
            contribution: row.contributor.clone(),
        };
        store.push(id, &projected)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    store.save(&job.out.join(INFLUENCE_FILE))?;
    if !quiet {
        println!(
            "  influence: {} rows x {} bytes in {} ({:.1} s)",
            store.rows().len(),
            store.bytes_per_row(),
            INFLUENCE_FILE,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(store)
}

/// A loaded adapter with its gradient store, ready to attribute texts.
pub struct InfluenceModel {
    gradients: ExampleGradients,
    store: GradientStore,
}

impl InfluenceModel {
    /// Loads the base checkpoint, the adapter and the adapter's `influence.bin`.
    pub fn open(base: &Path, adapter: &Path) -> anyhow::Result<Self> {
        let path = adapter.join(INFLUENCE_FILE);
        if !path.is_file() {
            anyhow::bail!(
                "{} has no {INFLUENCE_FILE}: train the adapter with `openledger train` \
                 (without --influence-dims 0) to record its training gradients",
                adapter.display()
            );
        }
        let store = GradientStore::open(&path)?;
        if store.adapter() != adapter_identity(adapter)? {
            anyhow::bail!(
                "{} was recorded for other adapter weights than those in {}; retrain the adapter",
                path.display(),
                adapter.display()
            );
        }
        let gradients = ExampleGradients::load(base, adapter)?;
        if gradients.groups() != store.groups() {
            anyhow::bail!(
                "{} holds gradients of other LoRA modules than the adapter's",
                path.display()
            );
        }
        Ok(Self { gradients, store })
    }

    /// The stored training gradients.
    pub fn store(&self) -> &GradientStore {
        &self.store
    }

    /// The sketched gradient of `text`'s loss, as the store's rows were taken.
    pub fn project(&self, text: &str) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(self
            .store
            .sketch()
            .project_all(&self.gradients.of_text(text)?))
    }

    /// Attributes `text` to the adapter's training rows.
    pub fn attribute(&self, text: &str) -> anyhow::Result<Influence> {
        Ok(self.store.score(&self.project(text)?)?)
    }
}
