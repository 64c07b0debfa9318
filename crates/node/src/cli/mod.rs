//! The protocol commands: `openledger datanet|model|settle|gov|stake|validator|feedback|time`,
//! clients of a running node.
//!
//! Transactions are signed locally with a dev account (`--account N`), a raw key
//! (`--private-key`, or `OPENLEDGER_PRIVATE_KEY`) or an encrypted keystore (`--keystore FILE`
//! with `--password-file` or `OPENLEDGER_KEYSTORE_PASSWORD`). Output is text, or JSON with
//! `--json`.

pub mod access;
pub mod datanet;
pub mod feedback;
pub mod gov;
pub mod job;
pub mod model;
mod report;
pub mod settle;
pub mod stake;
pub mod time;

use alloy_primitives::{Address, B256, U256, keccak256, utils::parse_ether};
use anyhow::Context;
use clap::Args;
use openledger_primitives::format_open;

pub(crate) use crate::client::{Client, SignerArgs, block_on, event, events};

/// Options every protocol command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// JSON-RPC endpoint of the node.
    #[arg(
        long,
        global = true,
        env = "OPENLEDGER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    rpc_url: String,
    /// Content API of the node (file uploads, training jobs).
    #[arg(
        long,
        global = true,
        env = "OPENLEDGER_API_URL",
        default_value = "http://127.0.0.1:8580"
    )]
    api_url: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    signer: SignerArgs,
}

impl Common {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.rpc_url, self.signer.signer()?)
    }

    /// Prints a command's report: its JSON with `--json`, else its text.
    fn report(&self, report: &(impl serde::Serialize + std::fmt::Display)) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            println!("{report}");
        }
        Ok(())
    }
}

/// `address`, or the signer's when none is given; `what` says what the command shows and how
/// to name the account.
fn whose(client: &Client, address: Option<Address>, what: &str) -> anyhow::Result<Address> {
    match address {
        Some(address) => Ok(address),
        None => client
            .sender()
            .with_context(|| format!("say whose {what}, or a signer")),
    }
}

/// Parses an amount of OPEN ("1.5") into wei: a plain decimal number, at most 18 decimals (a
/// wei), never negative.
pub(crate) fn parse_open(s: &str) -> Result<U256, String> {
    let invalid = |why: &str| format!("invalid OPEN amount {s:?}: {why}");
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(invalid("write a number of OPEN such as 2 or 0.5"));
    }
    if fraction.len() > 18 {
        return Err(invalid("finer than a wei (18 decimals)"));
    }
    parse_ether(s).map_err(|e| invalid(&e.to_string()))
}

/// An amount in wei written as a decimal string in JSON, in OPEN (`-` when it is not one).
pub(crate) fn open_of(value: &serde_json::Value) -> String {
    value
        .as_str()
        .and_then(|v| v.parse::<U256>().ok())
        .map_or_else(|| "-".to_string(), format_open)
}

/// A chain time (seconds since the Unix epoch) as a date, for text output: RFC 3339 in UTC, or
/// `-` for zero (not set).
fn date<T: Copy + std::fmt::Display>(seconds: T) -> String
where
    u64: TryFrom<T>,
{
    match u64::try_from(seconds) {
        Ok(0) => "-".into(),
        Ok(s) if s <= openledger_chain::clock::MAX_TIMESTAMP => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        _ => format!("{seconds} s after the epoch"),
    }
}

/// The hash of a description given as text (or zero without one).
fn text_hash(text: Option<&str>) -> B256 {
    text.map(|t| keccak256(t.as_bytes())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_times_print_as_dates() {
        assert_eq!(date(0u64), "-");
        assert_eq!(date(1_700_000_000u64), "2023-11-14T22:13:20Z");
        assert_eq!(date(U256::from(1_700_000_000u64)), "2023-11-14T22:13:20Z");
        assert_eq!(date(U256::MAX), format!("{} s after the epoch", U256::MAX));
    }

    #[test]
    fn an_amount_of_open_is_a_plain_non_negative_number_of_at_most_18_decimals() {
        assert_eq!(parse_open("1.5"), Ok(parse_ether("1.5").unwrap()));
        assert_eq!(parse_open("0"), Ok(U256::ZERO));
        assert_eq!(parse_open(".5"), Ok(parse_ether("0.5").unwrap()));
        assert_eq!(parse_open("0.000000000000000001"), Ok(U256::from(1)));
        for bad in [
            "-1",
            "",
            ".",
            "1e3",
            "0x10",
            " 1",
            "0.0000000000000000001",
            "1.2.3",
        ] {
            assert!(parse_open(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
