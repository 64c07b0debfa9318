//! `openledger time`: the dev chain's clock, moved in durations rather than raw
//! `evm_increaseTime` calls, to step through governance delays, unbonding and validator windows.

use std::fmt;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{Common, block_on};

/// Options of `openledger time`.
#[derive(Debug, Args)]
pub struct TimeArgs {
    #[command(subcommand)]
    command: TimeCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum TimeCommand {
    /// Move the clock forward and seal a block that much after the latest one: `90s`, `5m`,
    /// `1h 30m`, `2d` (a dev chain only).
    Advance {
        /// How far, as a duration.
        #[arg(value_parser = humantime::parse_duration)]
        by: Duration,
    },
    /// The latest block's time.
    Show,
}

/// Runs `openledger time`.
pub fn run(args: TimeArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        let before = client.latest_timestamp().await?;
        if let TimeCommand::Advance { by } = args.command {
            let seconds = by.as_secs();
            if seconds == 0 {
                anyhow::bail!("advance by at least a second");
            }
            client.advance_time(seconds).await?;
        }
        let now = client.latest_timestamp().await?;
        common.report(&Clock {
            timestamp: now,
            date: super::date(now),
            advanced_seconds: now.saturating_sub(before),
        })
    })
}

/// The latest block's time, and how far a command moved it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Clock {
    timestamp: u64,
    date: String,
    advanced_seconds: u64,
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Latest block at {}", self.date)?;
        if self.advanced_seconds > 0 {
            let moved = humantime::format_duration(Duration::from_secs(self.advanced_seconds));
            write!(f, " ({moved} later)")?;
        }
        Ok(())
    }
}
