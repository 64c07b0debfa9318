//! `openledger settle ...`: escrow, rewards and challenges.

use std::fmt;

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolEvent;
use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_primitives::addresses::SETTLEMENT;
use openledger_protocol::abi::ISettlement;
use serde::Serialize;

use super::report::{Sent, Time, Wei};
use super::{Client, Common, block_on, date, event, events, parse_open, whose};

/// Options of `openledger settle`.
#[derive(Debug, Args)]
pub struct SettleArgs {
    #[command(subcommand)]
    command: SettleCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum SettleCommand {
    /// Move OPEN into your inference escrow.
    Deposit {
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Start taking OPEN out of your escrow: `withdraw` takes it once the chain's withdrawal
    /// delay has passed (a day by default, a minute on the dev chain); until then it still pays
    /// for completions already served, and pays for no new one. Replaces an earlier unlock; 0
    /// cancels.
    Unlock {
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Take unlocked OPEN out of your escrow once its withdrawal delay has passed.
    Withdraw {
        /// Amount in OPEN [default: all that is unlocked].
        #[arg(value_parser = parse_open)]
        amount: Option<U256>,
    },
    /// Pay out your accrued rewards.
    Claim,
    /// Challenge a settled receipt's span attribution, with the bond, inside the challenge
    /// window: the node recomputes the attribution of the output; wrong weights are re-settled,
    /// the operator slashed and you paid from the slash; right ones cost you the bond.
    Challenge {
        /// The receipt id: its order's hash (`receiptId` in a completion's record).
        receipt_id: B256,
        /// The prompt the receipt was for.
        #[arg(long)]
        prompt: String,
        /// The output the receipt was for.
        #[arg(long)]
        output: String,
    },
    /// Show an account's claimable rewards and escrow (default: the signer's).
    Rewards {
        /// The account.
        address: Option<Address>,
    },
}

/// What `settle withdraw` takes out: `amount`, or all that is unlocked (and left after
/// settlements), refused before anything is sent while nothing is unlocked or its delay runs.
async fn withdrawable(client: &Client, amount: Option<U256>) -> anyhow::Result<U256> {
    let account = client.sender()?;
    let escrow = client
        .view(SETTLEMENT, &ISettlement::escrowOfCall { account })
        .await?;
    if escrow.unlocking.is_zero() {
        let delay = client
            .view(SETTLEMENT, &ISettlement::withdrawalDelayCall {})
            .await?;
        anyhow::bail!(
            "none of {account}'s escrow is unlocked: `openledger settle unlock AMOUNT` starts its \
             withdrawal delay ({} on this chain)",
            humantime::format_duration(std::time::Duration::from_secs(delay))
        );
    }
    if client.latest_timestamp().await? < escrow.releaseAt {
        anyhow::bail!(
            "{} of {account}'s escrow is unlocking: it can be withdrawn from {}",
            Wei(escrow.unlocking),
            date(escrow.releaseAt)
        );
    }
    Ok(amount.unwrap_or(escrow.unlocking))
}

/// Runs `openledger settle`.
pub fn run(args: SettleArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        let (receipt, text) = match args.command {
            SettleCommand::Deposit { amount } => {
                let receipt = client
                    .send(SETTLEMENT, &ISettlement::depositCall {}, amount)
                    .await?;
                (receipt, format!("Deposited {} into escrow", Wei(amount)))
            }
            SettleCommand::Unlock { amount } => {
                let call = ISettlement::unlockCall { amount };
                let receipt = client.send(SETTLEMENT, &call, U256::ZERO).await?;
                let release = event::<ISettlement::Unlocking>(&receipt)?.releaseAt;
                let text = if amount.is_zero() {
                    "Cancelled the unlock of escrow".to_string()
                } else {
                    format!("Unlocking {}; withdraw from {}", Wei(amount), date(release))
                };
                (receipt, text)
            }
            SettleCommand::Withdraw { amount } => {
                let amount = withdrawable(&client, amount).await?;
                let call = ISettlement::withdrawCall { amount };
                let receipt = client.send(SETTLEMENT, &call, U256::ZERO).await?;
                (receipt, format!("Withdrew {} from escrow", Wei(amount)))
            }
            SettleCommand::Claim => {
                let account = client.sender()?;
                let amount = client
                    .view(SETTLEMENT, &ISettlement::rewardsCall { account })
                    .await?;
                let receipt = client
                    .send(SETTLEMENT, &ISettlement::claimCall {}, U256::ZERO)
                    .await?;
                (receipt, format!("Claimed {}", Wei(amount)))
            }
            SettleCommand::Challenge {
                receipt_id,
                prompt,
                output,
            } => challenge(&client, receipt_id, prompt, output).await?,
            SettleCommand::Rewards { address } => {
                return common.report(&rewards(&client, address).await?);
            }
        };
        let account = client.sender()?;
        let balance = client.balance(account).await?;
        let escrow = client
            .view(SETTLEMENT, &ISettlement::balanceOfCall { account })
            .await?;
        common.report(&Escrowed {
            account,
            escrow: Wei(escrow),
            balance: Wei(balance),
            sent: Sent::new(&receipt, text),
        })
    })
}

/// A transaction on escrow, with the signer's escrow and wallet after it.
#[derive(Debug, Serialize)]
struct Escrowed {
    account: Address,
    escrow: Wei,
    balance: Wei,
    #[serde(flatten)]
    sent: Sent,
}

impl fmt::Display for Escrowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (account, escrow, balance) = (self.account, self.escrow, self.balance);
        write!(
            f,
            "{}; {account} now has {escrow} in escrow and {balance} in its wallet",
            self.sent
        )
    }
}

/// An account's claimable rewards and escrow.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rewards {
    account: Address,
    rewards: Wei,
    escrow: Wei,
    unlocking: Wei,
    release_at: Time,
}

async fn rewards(client: &Client, address: Option<Address>) -> anyhow::Result<Rewards> {
    let account = whose(client, address, "rewards to show: ADDRESS")?;
    let rewards = client
        .view(SETTLEMENT, &ISettlement::rewardsCall { account })
        .await?;
    let escrow = client
        .view(SETTLEMENT, &ISettlement::escrowOfCall { account })
        .await?;
    Ok(Rewards {
        account,
        rewards: Wei(rewards),
        escrow: Wei(escrow.balance),
        unlocking: Wei(escrow.unlocking),
        release_at: Time(escrow.releaseAt),
    })
}

impl fmt::Display for Rewards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.account)?;
        writeln!(f, "  claimable rewards  {}", self.rewards)?;
        write!(f, "  escrow             {}", self.escrow)?;
        if !self.unlocking.0.is_zero() {
            let (unlocking, release) = (self.unlocking, self.release_at);
            write!(
                f,
                "\n  unlocking          {unlocking} (withdraw from {release})"
            )?;
        }
        Ok(())
    }
}

/// Sends a challenge of `receipt_id` with the record its `ReceiptRecorded` event holds.
async fn challenge(
    client: &Client,
    receipt_id: B256,
    prompt: String,
    output: String,
) -> anyhow::Result<(alloy_rpc_types_eth::TransactionReceipt, String)> {
    let head = client.block_number().await?;
    let topics = [ISettlement::ReceiptRecorded::SIGNATURE_HASH];
    let record = client
        .logs(SETTLEMENT, &topics, 0, head)
        .await?
        .iter()
        .filter_map(|log| ISettlement::ReceiptRecorded::decode_log_data(log.data()).ok())
        .find(|e| e.receiptId == receipt_id)
        .map(|e| e.record)
        .with_context(|| format!("no receipt {receipt_id} was settled on this chain"))?;
    let bond = client
        .view(SETTLEMENT, &ISettlement::challengeBondCall {})
        .await?;
    let call = ISettlement::challengeCall {
        receiptId: receipt_id,
        record,
        prompt,
        output,
    };
    let receipt = client.send(SETTLEMENT, &call, bond).await?;
    let text = match events::<ISettlement::Resettled>(&receipt).pop() {
        Some(r) => format!(
            "Challenge upheld: receipt re-settled, {} slashed from the operator, {} paid to you",
            Wei(r.slashed),
            Wei(r.toChallenger)
        ),
        None => format!(
            "Challenge rejected: the settled weights were right; the bond of {} went to the treasury",
            Wei(bond)
        ),
    };
    Ok((receipt, text))
}
