//! `openledger db`: inspect and check a data directory.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_chain::{Store, verify::verify_state};

use crate::datadir::{DataDir, default_datadir};

/// Options of `openledger db`.
#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Recompute the state root from the stored accounts and storage and compare it with the
    /// head block's. Exits non-zero if they differ.
    Verify {
        /// Data directory. [default: <user data dir>/openledger/dev]
        #[arg(long, value_name = "DIR")]
        datadir: Option<PathBuf>,
    },
}

/// Runs a `db` subcommand.
pub fn run(args: DbArgs) -> anyhow::Result<()> {
    match args.command {
        DbCommand::Verify { datadir } => verify(datadir.unwrap_or_else(|| default_datadir("dev"))),
    }
}

fn verify(path: PathBuf) -> anyhow::Result<()> {
    let datadir = DataDir::open(&path)?;
    let db = datadir.chain_db();
    if !db.exists() {
        anyhow::bail!("no chain store in {}", path.display());
    }
    let store = Store::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    let verified = verify_state(&store.reader()?)?;
    println!(
        "head block {}: {} accounts, stored state root {}, recomputed {}",
        verified.head, verified.accounts, verified.stored_root, verified.computed_root
    );
    if !verified.bad_storage_roots.is_empty() {
        println!(
            "accounts with a wrong storage root: {:?}",
            verified.bad_storage_roots
        );
    }
    if !verified.ok() {
        anyhow::bail!("state root mismatch: the store is inconsistent");
    }
    println!("ok");
    Ok(())
}
