//! `openledger settle ...`: escrow and rewards.

use alloy_primitives::{Address, U256};
use clap::{Args, Subcommand};
use openledger_primitives::addresses::SETTLEMENT;
use openledger_protocol::abi::ISettlement;
use serde_json::json;

use super::{Common, block_on, open, parse_open};

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
            SettleCommand::Rewards { address } => {
                let account = match address {
                    Some(account) => account,
                    None => client.sender()?,
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
        common.print(
            json!({"account": sender, "balance": balance.to_string(),
                   "tx": receipt.transaction_hash}),
            format!("{text}; {sender} now holds {}", open(balance)),
        );
        Ok(())
    })
}
