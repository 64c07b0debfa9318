//! `openledger stake ...`: stake behind models, rewards, slashing and contributor flags.

use std::fmt;

use alloy_primitives::{Address, U256};
use clap::{Args, Subcommand};
use openledger_primitives::addresses::STAKING;
use openledger_protocol::abi::IStaking;
use serde::Serialize;

use super::report::{Id, Sent, Time, Wei};
use super::{Client, Common, block_on, parse_open, whose};

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
    Add(Amount),
    /// Start unbonding delegated stake (it stays slashable until withdrawn).
    Remove(Amount),
    /// Add to your operator stake for a model, which deploying and serving it require.
    Operator(Amount),
    /// Start unbonding operator stake.
    OperatorRemove(Amount),
    /// Withdraw stake whose unbonding period has passed.
    Withdraw(Model),
    /// Pay out your staking rewards from a model.
    Claim(Model),
    /// Slash a model's stake (governance, or the genesis admin).
    Slash(Slash),
    /// Flag a contribution as adversarial (its datanet's owner, or governance).
    Flag(Flag),
    /// Show a model's stake and an account's position in it (default: the signer's).
    Show(Show),
}

/// A model and an amount of OPEN.
#[derive(Debug, Args)]
struct Amount {
    /// The model.
    model: U256,
    /// Amount in OPEN.
    #[arg(value_parser = parse_open)]
    amount: U256,
}

/// A model.
#[derive(Debug, Args)]
struct Model {
    /// The model.
    model: U256,
}

#[derive(Debug, Args)]
struct Slash {
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
}

#[derive(Debug, Args)]
struct Flag {
    /// The contribution.
    contribution: U256,
    /// Why.
    #[arg(long)]
    reason: String,
}

#[derive(Debug, Args)]
struct Show {
    /// The model.
    model: U256,
    /// The account.
    #[arg(long)]
    address: Option<Address>,
}

/// Runs `openledger stake`.
pub fn run(args: StakeArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        use StakeCommand as C;
        let sent = match args.command {
            C::Show(show) => return common.report(&show.execute(&client).await?),
            C::Add(a) => {
                let said = format!("Staked {} on model {}", Wei(a.amount), a.model);
                let call = IStaking::stakeCall { modelId: a.model };
                (client.send(STAKING, &call, a.amount).await?, said)
            }
            C::Remove(a) => {
                let said = format!("Unbonding {} from model {}", Wei(a.amount), a.model);
                let call = IStaking::requestUnstakeCall {
                    modelId: a.model,
                    amount: a.amount,
                };
                (client.send(STAKING, &call, U256::ZERO).await?, said)
            }
            C::Operator(a) => {
                let said = format!(
                    "Added {} of operator stake to model {}",
                    Wei(a.amount),
                    a.model
                );
                let call = IStaking::stakeOperatorCall { modelId: a.model };
                (client.send(STAKING, &call, a.amount).await?, said)
            }
            C::OperatorRemove(a) => {
                let said = format!(
                    "Unbonding {} of operator stake from model {}",
                    Wei(a.amount),
                    a.model
                );
                let call = IStaking::requestOperatorUnstakeCall {
                    modelId: a.model,
                    amount: a.amount,
                };
                (client.send(STAKING, &call, U256::ZERO).await?, said)
            }
            C::Withdraw(Model { model }) => {
                let said = format!("Withdrew unbonded stake from model {model}");
                let call = IStaking::withdrawUnbondedCall { modelId: model };
                (client.send(STAKING, &call, U256::ZERO).await?, said)
            }
            C::Claim(Model { model }) => {
                let account = client.sender()?;
                let position = IStaking::positionOfCall {
                    modelId: model,
                    account,
                };
                let pending = client.view(STAKING, &position).await?.pendingRewards;
                let call = IStaking::claimCall { modelId: model };
                let said = format!("Claimed {}", Wei(pending));
                (client.send(STAKING, &call, U256::ZERO).await?, said)
            }
            C::Slash(c) => {
                let said = format!("Slashed {} ppm of model {}'s stake", c.ppm, c.model);
                let call = IStaking::slashCall {
                    modelId: c.model,
                    ppm: c.ppm,
                    reason: c.reason,
                    beneficiary: c.beneficiary,
                };
                (client.send(STAKING, &call, U256::ZERO).await?, said)
            }
            C::Flag(c) => {
                let said = format!("Flagged contribution {}", c.contribution);
                let call = IStaking::flagContributionCall {
                    contributionId: c.contribution,
                    reason: c.reason,
                };
                (client.send(STAKING, &call, U256::ZERO).await?, said)
            }
        };
        common.report(&Sent::new(&sent.0, sent.1))
    })
}

/// A model's stake and an account's position in it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Position {
    model_id: Id,
    operator: Address,
    operator_stake: Wei,
    minimum_stake: Wei,
    delegated: Wei,
    unbonding: Wei,
    trailing_volume: Wei,
    account: Address,
    /// What the account staked as an operator of the model, the model's operator or not (an
    /// operator's stake counts for the model once it is deployed with that operator).
    account_operator_stake: Wei,
    bonded: Wei,
    account_unbonding: Wei,
    release_at: Time,
    pending_rewards: Wei,
}

impl Show {
    async fn execute(self, client: &Client) -> anyhow::Result<Position> {
        let account = whose(client, self.address, "position to show: --address ADDR")?;
        let model = self.model;
        let stake = client
            .view(STAKING, &IStaking::modelStakeCall { modelId: model })
            .await?;
        let call = IStaking::positionOfCall {
            modelId: model,
            account,
        };
        let p = client.view(STAKING, &call).await?;
        let own = IStaking::operatorStakeCall {
            modelId: model,
            operator: account,
        };
        let account_operator_stake = client.view(STAKING, &own).await?;
        Ok(Position {
            model_id: Id(model),
            operator: stake.operator,
            operator_stake: Wei(stake.operatorStake),
            minimum_stake: Wei(stake.minimumStake),
            delegated: Wei(stake.delegated),
            unbonding: Wei(stake.unbonding),
            trailing_volume: Wei(stake.trailingVolume),
            account,
            account_operator_stake: Wei(account_operator_stake),
            bonded: Wei(p.bonded),
            account_unbonding: Wei(p.unbonding),
            release_at: Time(p.releaseAt),
            pending_rewards: Wei(p.pendingRewards),
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Model {}", self.model_id)?;
        let operator = &self.operator;
        let (stake, minimum) = (self.operator_stake, self.minimum_stake);
        if operator.is_zero() {
            writeln!(
                f,
                "  operator        none until deployed (minimum {minimum})"
            )?;
        } else {
            writeln!(
                f,
                "  operator        {operator} with {stake} (minimum {minimum})"
            )?;
        }
        writeln!(f, "  delegated       {}", self.delegated)?;
        writeln!(f, "  unbonding       {}", self.unbonding)?;
        writeln!(f, "  fee volume      {}", self.trailing_volume)?;
        writeln!(f, "{}", self.account)?;
        if self.account != self.operator && !self.account_operator_stake.0.is_zero() {
            let own = self.account_operator_stake;
            writeln!(
                f,
                "  as operator     {own} (counts once deployed with this operator)"
            )?;
        }
        writeln!(f, "  bonded          {}", self.bonded)?;
        let (unbonding, release) = (self.account_unbonding, self.release_at);
        writeln!(f, "  unbonding       {unbonding} (from {release})")?;
        write!(f, "  rewards         {}", self.pending_rewards)
    }
}
