//! `openledger attribution influence`: scores a text against an adapter's recorded training
//! gradients.

use std::path::Path;
use std::time::Instant;

use openledger_flywheel::influence::InfluenceModel;

/// Runs `openledger attribution influence`.
pub fn query(base: &Path, adapter: &Path, text: &str, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let model = InfluenceModel::open(base, adapter)?;
    let influence = model.attribute(text)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&influence)?);
        return Ok(());
    }
    if influence.weights.is_empty() {
        println!("no attribution: no training row lowers the text's loss");
    }
    super::print_weights(&influence.weights);
    println!("most influential rows (DataInf, TracIn):");
    for row in &influence.top_rows {
        println!(
            "  {:>12.4e} {:>12.4e}  {}/{}",
            row.datainf, row.tracin, row.contribution, row.row
        );
    }
    println!(
        "scored against {} training rows in {:.0} ms",
        model.store().rows().len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
