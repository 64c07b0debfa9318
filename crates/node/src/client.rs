//! A command's connection to a node: who signs its transactions and the runtime its requests
//! run on. The protocol commands (`cli`) and `openledger train --datanet` (`factory`) share it.

use std::path::PathBuf;

use alloy_primitives::B256;
use alloy_signer_local::PrivateKeySigner;
use anyhow::Context;
use clap::Args;

use crate::accounts::dev_accounts;
pub use openledger_flywheel::client::{Client, event, events};

/// Who signs transactions.
#[derive(Debug, Args)]
pub(crate) struct SignerArgs {
    /// Sign with dev account N of the test mnemonic (as printed by `openledger dev`).
    #[arg(long, global = true, value_name = "N", conflicts_with_all = ["private_key", "keystore"])]
    pub(crate) account: Option<u32>,
    /// Sign with this private key (hex).
    #[arg(
        long,
        global = true,
        env = "OPENLEDGER_PRIVATE_KEY",
        hide_env_values = true
    )]
    private_key: Option<B256>,
    /// Sign with this encrypted JSON keystore.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "private_key"
    )]
    keystore: Option<PathBuf>,
    /// File holding the keystore's password (else OPENLEDGER_KEYSTORE_PASSWORD).
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

impl SignerArgs {
    pub(crate) fn signer(&self) -> anyhow::Result<Option<PrivateKeySigner>> {
        if let Some(index) = self.account {
            let account = dev_accounts(index + 1)?.pop().expect("index + 1 accounts");
            return Ok(Some(PrivateKeySigner::from_bytes(&account.key)?));
        }
        if let Some(key) = self.private_key {
            return Ok(Some(
                PrivateKeySigner::from_bytes(&key).context("invalid --private-key")?,
            ));
        }
        let Some(path) = &self.keystore else {
            return Ok(None);
        };
        let password = match &self.password_file {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => std::env::var("OPENLEDGER_KEYSTORE_PASSWORD").context(
                "the keystore needs a password: --password-file or OPENLEDGER_KEYSTORE_PASSWORD",
            )?,
        };
        let signer = PrivateKeySigner::decrypt_keystore(path, password)
            .with_context(|| format!("cannot decrypt keystore {}", path.display()))?;
        Ok(Some(signer))
    }
}

/// Runs an async command on a fresh single-threaded runtime.
pub(crate) fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(
    f: F,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
