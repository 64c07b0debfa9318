//! `openledger statetest`: runs Ethereum GeneralStateTests through the chain's execution and
//! state-root code and prints `N passed, M failed`.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use clap::Args;
use openledger_chain::statetest::{CaseResult, collect_files, run_file};

/// Options of `openledger statetest`.
#[derive(Debug, Args)]
pub struct StateTestArgs {
    /// State-test JSON files or folders (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Print every case, not only failures.
    #[arg(long)]
    verbose: bool,
}

/// Runs the tests; fails if any case failed.
pub fn run(args: StateTestArgs) -> anyhow::Result<()> {
    let files = collect_files(&args.paths)?;
    if files.is_empty() {
        anyhow::bail!("no .json state tests under the given paths");
    }
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results: Vec<(usize, Vec<CaseResult>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(i) else {
                            return done;
                        };
                        done.push((i, run_file(file)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("state-test worker panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for case in results.into_iter().flat_map(|(_, cases)| cases) {
        match &case.failure {
            None if case.skipped => {
                skipped += 1;
                if args.verbose {
                    println!("skip {}", case.name);
                }
            }
            None => {
                passed += 1;
                if args.verbose {
                    println!("ok   {}", case.name);
                }
            }
            Some(reason) => {
                failed += 1;
                println!("FAIL {}: {reason}", case.name);
            }
        }
    }
    if skipped > 0 {
        println!(
            "skipped {skipped} case(s) of {:?}: creation over an account with storage (EIP-7610), which revm does not model and no chain can reach",
            openledger_chain::statetest::SKIPPED_TESTS
        );
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        anyhow::bail!("{failed} state test case(s) failed");
    }
    Ok(())
}
