//! `openledger settle ...`: escrow, rewards and challenges.

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolEvent;
use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_primitives::addresses::SETTLEMENT;
use openledger_protocol::abi::ISettlement;
use serde_json::json;

use super::{Client, Common, block_on, events, open, parse_open};

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
    /// Take OPEN back out of your escrow.
    Withdraw {
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
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
                (receipt, format!("Deposited {} into escrow", open(amount)))
            }
            SettleCommand::Withdraw { amount } => {
                let call = ISettlement::withdrawCall { amount };
                let receipt = client.send(SETTLEMENT, &call, U256::ZERO).await?;
                (receipt, format!("Withdrew {} from escrow", open(amount)))
            }
            SettleCommand::Claim => {
                let account = client.sender()?;
                let amount = client
                    .view(SETTLEMENT, &ISettlement::rewardsCall { account })
                    .await?;
                let receipt = client
                    .send(SETTLEMENT, &ISettlement::claimCall {}, U256::ZERO)
                    .await?;
                (receipt, format!("Claimed {}", open(amount)))
            }
            SettleCommand::Challenge {
                receipt_id,
                prompt,
                output,
            } => challenge(&client, receipt_id, prompt, output).await?,
            SettleCommand::Rewards { address } => {
                let account = match address {
                    Some(account) => account,
                    None => client
                        .sender()
                        .context("say whose rewards to show: ADDRESS, or a signer")?,
                };
                let rewards = client
                    .view(SETTLEMENT, &ISettlement::rewardsCall { account })
                    .await?;
                let escrow = client
                    .view(SETTLEMENT, &ISettlement::balanceOfCall { account })
                    .await?;
                common.print(
                    json!({"account": account, "rewards": rewards.to_string(),
                           "escrow": escrow.to_string()}),
                    format!(
                        "{account}\n  claimable rewards  {}\n  escrow             {}",
                        open(rewards),
                        open(escrow)
                    ),
                );
                return Ok(());
            }
        };
        let sender = client.sender()?;
        let balance = client.balance(sender).await?;
        let escrow = client
            .view(SETTLEMENT, &ISettlement::balanceOfCall { account: sender })
            .await?;
        common.print(
            json!({"account": sender, "escrow": escrow.to_string(), "balance": balance.to_string(),
                   "tx": receipt.transaction_hash}),
            format!(
                "{text}; {sender} now has {} in escrow and {} in its wallet",
                open(escrow),
                open(balance)
            ),
        );
        Ok(())
    })
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
            open(r.slashed),
            open(r.toChallenger)
        ),
        None => format!(
            "Challenge rejected: the settled weights were right; the bond of {} went to the treasury",
            open(bond)
        ),
    };
    Ok((receipt, text))
}
