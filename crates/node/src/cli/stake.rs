//! `openledger stake ...`: stake behind models, rewards, slashing and contributor flags.

use alloy_primitives::{Address, U256};
use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_primitives::addresses::STAKING;
use openledger_protocol::abi::IStaking;
use serde_json::json;

use super::{Common, block_on, date, open, parse_open};

/// Options of `openledger stake`.
#[derive(Debug, Args)]
pub struct StakeArgs {
    #[command(subcommand)]
    command: StakeCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum StakeCommand {
    /// Delegate OPEN to a model and earn its stakers' share of fees.
    Add {
        /// The model.
        model: U256,
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Start unbonding delegated stake (it stays slashable until withdrawn).
    Remove {
        /// The model.
        model: U256,
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Add to your operator stake for a model, which deploying and serving it require.
    Operator {
        /// The model.
        model: U256,
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Start unbonding operator stake.
    OperatorRemove {
        /// The model.
        model: U256,
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Withdraw stake whose unbonding period has passed.
    Withdraw {
        /// The model.
        model: U256,
    },
    /// Pay out your staking rewards from a model.
    Claim {
        /// The model.
        model: U256,
    },
    /// Slash a model's stake (governance, or the genesis admin).
    Slash {
        /// The model.
        model: U256,
        /// Share of the stake to slash, in ppm.
        #[arg(long)]
        ppm: u32,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who reported it (gets the reporter's share).
        #[arg(long, default_value_t = Address::ZERO)]
        beneficiary: Address,
    },
    /// Flag a contribution as adversarial (its datanet's owner, or governance).
    Flag {
        /// The contribution.
        contribution: U256,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Show a model's stake and an account's position in it (default: the signer's).
    Show {
        /// The model.
        model: U256,
        /// The account.
        #[arg(long)]
        address: Option<Address>,
    },
}

/// Runs `openledger stake`.
pub fn run(args: StakeArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        let (receipt, text) = match args.command {
            StakeCommand::Add { model, amount } => {
                let call = IStaking::stakeCall { modelId: model };
                let receipt = client.send(STAKING, &call, amount).await?;
                (receipt, format!("Staked {} on model {model}", open(amount)))
            }
            StakeCommand::Remove { model, amount } => {
                let call = IStaking::requestUnstakeCall {
                    modelId: model,
                    amount,
                };
                let receipt = client.send(STAKING, &call, U256::ZERO).await?;
                (
                    receipt,
                    format!("Unbonding {} from model {model}", open(amount)),
                )
            }
            StakeCommand::Operator { model, amount } => {
                let call = IStaking::stakeOperatorCall { modelId: model };
                let receipt = client.send(STAKING, &call, amount).await?;
                (
                    receipt,
                    format!("Added {} of operator stake to model {model}", open(amount)),
                )
            }
            StakeCommand::OperatorRemove { model, amount } => {
                let call = IStaking::requestOperatorUnstakeCall {
                    modelId: model,
                    amount,
                };
                let receipt = client.send(STAKING, &call, U256::ZERO).await?;
                (
                    receipt,
                    format!(
                        "Unbonding {} of operator stake from model {model}",
                        open(amount)
                    ),
                )
            }
            StakeCommand::Withdraw { model } => {
                let call = IStaking::withdrawUnbondedCall { modelId: model };
                let receipt = client.send(STAKING, &call, U256::ZERO).await?;
                (
                    receipt,
                    format!("Withdrew unbonded stake from model {model}"),
                )
            }
            StakeCommand::Claim { model } => {
                let account = client.sender()?;
                let position = client
                    .view(
                        STAKING,
                        &IStaking::positionOfCall {
                            modelId: model,
                            account,
                        },
                    )
                    .await?;
                let call = IStaking::claimCall { modelId: model };
                let receipt = client.send(STAKING, &call, U256::ZERO).await?;
                (
                    receipt,
                    format!("Claimed {}", open(position.pendingRewards)),
                )
            }
            StakeCommand::Slash {
                model,
                ppm,
                reason,
                beneficiary,
            } => {
                let call = IStaking::slashCall {
                    modelId: model,
                    ppm,
                    reason,
                    beneficiary,
                };
                let receipt = client.send(STAKING, &call, U256::ZERO).await?;
                (
                    receipt,
                    format!("Slashed {ppm} ppm of model {model}'s stake"),
                )
            }
            StakeCommand::Flag {
                contribution,
                reason,
            } => {
                let call = IStaking::flagContributionCall {
                    contributionId: contribution,
                    reason,
                };
                let receipt = client.send(STAKING, &call, U256::ZERO).await?;
                (receipt, format!("Flagged contribution {contribution}"))
            }
            StakeCommand::Show { model, address } => {
                let account = match address {
                    Some(account) => account,
                    None => client
                        .sender()
                        .context("say whose position to show: --address ADDR, or a signer")?,
                };
                let stake = client
                    .view(STAKING, &IStaking::modelStakeCall { modelId: model })
                    .await?;
                let p = client
                    .view(
                        STAKING,
                        &IStaking::positionOfCall {
                            modelId: model,
                            account,
                        },
                    )
                    .await?;
                common.print(
                    json!({"modelId": model.to_string(), "operator": stake.operator,
                           "operatorStake": stake.operatorStake.to_string(),
                           "minimumStake": stake.minimumStake.to_string(),
                           "delegated": stake.delegated.to_string(),
                           "unbonding": stake.unbonding.to_string(),
                           "trailingVolume": stake.trailingVolume.to_string(),
                           "account": account, "bonded": p.bonded.to_string(),
                           "accountUnbonding": p.unbonding.to_string(),
                           "releaseAt": p.releaseAt,
                           "pendingRewards": p.pendingRewards.to_string()}),
                    format!(
                        "Model {model}\n  operator        {} with {} (minimum {})\n  \
                         delegated       {}\n  unbonding       {}\n  fee volume      {}\n\
                         {account}\n  bonded          {}\n  unbonding       {} (from {})\n  \
                         rewards         {}",
                        stake.operator,
                        open(stake.operatorStake),
                        open(stake.minimumStake),
                        open(stake.delegated),
                        open(stake.unbonding),
                        open(stake.trailingVolume),
                        open(p.bonded),
                        open(p.unbonding),
                        date(p.releaseAt),
                        open(p.pendingRewards)
                    ),
                );
                return Ok(());
            }
        };
        common.print(json!({"tx": receipt.transaction_hash}), text);
        Ok(())
    })
}
