//! `openledger gov ...`: GOPEN and the Governor.

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall, SolValue};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use openledger_primitives::addresses::{GOPEN, GOVERNOR, MODELS, STAKING, TREASURY};
use openledger_protocol::abi::{IGOPEN, IGovernor, IModels, IStaking, ITreasury};
use serde_json::json;

use super::{Client, Common, block_on, date, events, open, parse_open};

/// Options of `openledger gov`.
#[derive(Debug, Args)]
pub struct GovArgs {
    #[command(subcommand)]
    command: GovCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum GovCommand {
    /// Wrap OPEN into GOPEN (and delegate its votes to yourself if you have not delegated).
    Deposit {
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Unwrap GOPEN back into OPEN.
    Withdraw {
        /// Amount in GOPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Give your voting power to an account (yourself to vote directly).
    Delegate {
        /// The delegate.
        to: Address,
    },
    /// Propose actions; with none, the proposal only signals.
    Propose {
        /// What the proposal is for (its text is the on-chain description).
        #[arg(long)]
        description: String,
        /// Approve a proposed model (repeatable).
        #[arg(long = "approve-model", value_name = "MODEL")]
        approve_models: Vec<U256>,
        /// Slash a model: MODEL,PPM[,BENEFICIARY] (repeatable); the description is the reason.
        #[arg(long = "slash", value_name = "MODEL,PPM[,BENEFICIARY]", value_parser = parse_slash)]
        slashes: Vec<(U256, u32, Address)>,
        /// Pay from the treasury: TO,AMOUNT in OPEN (repeatable).
        #[arg(long = "spend", value_name = "TO,AMOUNT", value_parser = parse_spend)]
        spends: Vec<(Address, U256)>,
        /// Any module call: ADDRESS,CALLDATA in hex (repeatable).
        #[arg(long = "call", value_name = "ADDRESS,CALLDATA", value_parser = parse_call)]
        calls: Vec<(Address, Bytes)>,
    },
    /// Vote on an active proposal.
    Vote {
        /// The proposal id.
        proposal: U256,
        /// Your vote.
        support: Support,
        /// Why (recorded in the VoteCast event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Queue a succeeded proposal for execution after the timelock.
    Queue {
        /// The proposal id.
        proposal: U256,
    },
    /// Execute a queued proposal whose timelock has passed.
    Execute {
        /// The proposal id.
        proposal: U256,
    },
    /// Show a proposal, or with none every proposal and your GOPEN.
    Show {
        /// The proposal id.
        proposal: Option<U256>,
    },
}

/// A vote, numbered as OpenZeppelin's GovernorCountingSimple numbers them.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Support {
    Against = 0,
    For = 1,
    Abstain = 2,
}

fn parse_slash(s: &str) -> Result<(U256, u32, Address), String> {
    let parts: Vec<&str> = s.split(',').collect();
    let bad = || format!("expected MODEL,PPM[,BENEFICIARY], got {s:?}");
    let (model, ppm) = match parts.as_slice() {
        [model, ppm] | [model, ppm, _] => (
            model.parse().map_err(|_| bad())?,
            ppm.parse().map_err(|_| bad())?,
        ),
        _ => return Err(bad()),
    };
    let beneficiary = match parts.get(2) {
        Some(b) => b.parse().map_err(|_| bad())?,
        None => Address::ZERO,
    };
    Ok((model, ppm, beneficiary))
}

fn parse_spend(s: &str) -> Result<(Address, U256), String> {
    let (to, amount) = s
        .split_once(',')
        .ok_or_else(|| format!("expected TO,AMOUNT, got {s:?}"))?;
    let to = to
        .parse()
        .map_err(|e| format!("invalid address {to:?}: {e}"))?;
    Ok((to, parse_open(amount)?))
}

fn parse_call(s: &str) -> Result<(Address, Bytes), String> {
    let (to, data) = s
        .split_once(',')
        .ok_or_else(|| format!("expected ADDRESS,CALLDATA, got {s:?}"))?;
    let to = to
        .parse()
        .map_err(|e| format!("invalid address {to:?}: {e}"))?;
    let data = data
        .parse()
        .map_err(|e| format!("invalid calldata {data:?}: {e}"))?;
    Ok((to, data))
}

/// A proposal's actions: `(targets, values, calldatas)`.
type Actions = (Vec<Address>, Vec<U256>, Vec<Bytes>);

fn actions(
    description: &str,
    approve_models: Vec<U256>,
    slashes: Vec<(U256, u32, Address)>,
    spends: Vec<(Address, U256)>,
    calls: Vec<(Address, Bytes)>,
) -> Actions {
    let mut list: Vec<(Address, Bytes)> = Vec::new();
    for model in approve_models {
        list.push((
            MODELS,
            IModels::approveModelCall { modelId: model }
                .abi_encode()
                .into(),
        ));
    }
    for (model, ppm, beneficiary) in slashes {
        let call = IStaking::slashCall {
            modelId: model,
            ppm,
            reason: description.to_string(),
            beneficiary,
        };
        list.push((STAKING, call.abi_encode().into()));
    }
    for (to, amount) in spends {
        let call = ITreasury::spendCall {
            to,
            amount,
            memo: description.to_string(),
        };
        list.push((TREASURY, call.abi_encode().into()));
    }
    list.extend(calls);
    if list.is_empty() {
        list.push((Address::ZERO, Bytes::new()));
    }
    let values = vec![U256::ZERO; list.len()];
    let (targets, calldatas) = list.into_iter().unzip();
    (targets, values, calldatas)
}

/// Runs `openledger gov`.
pub fn run(args: GovArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        let (receipt, json, text) = match args.command {
            GovCommand::Deposit { amount } => {
                let receipt = client.send(GOPEN, &IGOPEN::depositCall {}, amount).await?;
                let account = client.sender()?;
                let delegate = client
                    .view(GOPEN, &IGOPEN::delegatesCall { account })
                    .await?;
                let mut text = format!("Wrapped {} into GOPEN", open(amount));
                if delegate.is_zero() {
                    let call = IGOPEN::delegateCall { delegatee: account };
                    client.send(GOPEN, &call, U256::ZERO).await?;
                    text.push_str(" and delegated its votes to yourself");
                }
                (receipt, json!({"amount": amount.to_string()}), text)
            }
            GovCommand::Withdraw { amount } => {
                let call = IGOPEN::withdrawCall { amount };
                let receipt = client.send(GOPEN, &call, U256::ZERO).await?;
                let text = format!("Unwrapped {} of GOPEN", open(amount));
                (receipt, json!({"amount": amount.to_string()}), text)
            }
            GovCommand::Delegate { to } => {
                let call = IGOPEN::delegateCall { delegatee: to };
                let receipt = client.send(GOPEN, &call, U256::ZERO).await?;
                (
                    receipt,
                    json!({"delegate": to}),
                    format!("Delegated your votes to {to}"),
                )
            }
            GovCommand::Propose {
                description,
                approve_models,
                slashes,
                spends,
                calls,
            } => {
                let (targets, values, calldatas) =
                    actions(&description, approve_models, slashes, spends, calls);
                let call = IGovernor::proposeCall {
                    targets,
                    values,
                    calldatas,
                    description,
                };
                let receipt = client.send(GOVERNOR, &call, U256::ZERO).await?;
                let event = events::<IGovernor::ProposalCreated>(&receipt)
                    .pop()
                    .context("no ProposalCreated event")?;
                let id = event.proposalId;
                let text = format!(
                    "Proposed {id}\n  voting from {} to {}",
                    date(event.voteStart),
                    date(event.voteEnd)
                );
                (receipt, json!({"proposalId": id.to_string()}), text)
            }
            GovCommand::Vote {
                proposal,
                support,
                reason,
            } => {
                let call = IGovernor::castVoteWithReasonCall {
                    proposalId: proposal,
                    support: support as u8,
                    reason: reason.unwrap_or_default(),
                };
                let receipt = client.send(GOVERNOR, &call, U256::ZERO).await?;
                let weight = events::<IGovernor::VoteCast>(&receipt)
                    .pop()
                    .map(|e| e.weight)
                    .unwrap_or_default();
                let text = format!(
                    "Voted {support:?} on {proposal} with {} of votes",
                    open(weight)
                );
                (
                    receipt,
                    json!({"proposalId": proposal.to_string(), "weight": weight.to_string()}),
                    text,
                )
            }
            GovCommand::Queue { proposal } => {
                let call: IGovernor::queueCall = stored_call(&client, proposal).await?;
                let receipt = client.send(GOVERNOR, &call, U256::ZERO).await?;
                let eta = events::<IGovernor::ProposalQueued>(&receipt)
                    .pop()
                    .map(|e| e.etaSeconds)
                    .unwrap_or_default();
                let text = format!("Queued {proposal}; executable from {}", date(eta));
                (
                    receipt,
                    json!({"proposalId": proposal.to_string(), "eta": eta.to_string()}),
                    text,
                )
            }
            GovCommand::Execute { proposal } => {
                let call: IGovernor::executeCall = stored_call(&client, proposal).await?;
                let receipt = client.send(GOVERNOR, &call, U256::ZERO).await?;
                (
                    receipt,
                    json!({"proposalId": proposal.to_string()}),
                    format!("Executed {proposal}"),
                )
            }
            GovCommand::Show { proposal: Some(id) } => return show(common, &client, id).await,
            GovCommand::Show { proposal: None } => return list(common, &client).await,
        };
        let mut json = json;
        json["tx"] = json!(receipt.transaction_hash);
        common.print(json, text);
        Ok(())
    })
}

/// A call taking a stored proposal's actions (`queue`, `execute`), which share the layout of
/// `proposalDetails`' return values.
async fn stored_call<C: SolCall>(client: &Client, id: U256) -> anyhow::Result<C> {
    let d = details(client, id).await?;
    let args = (d.targets, d.values, d.calldatas, d.descriptionHash);
    let encoded = [C::SELECTOR.as_slice(), &args.abi_encode_params()].concat();
    Ok(C::abi_decode(&encoded)?)
}

async fn details(client: &Client, id: U256) -> anyhow::Result<IGovernor::proposalDetailsReturn> {
    client
        .view(GOVERNOR, &IGovernor::proposalDetailsCall { proposalId: id })
        .await
}

async fn show(common: &Common, client: &Client, id: U256) -> anyhow::Result<()> {
    let state = client
        .view(GOVERNOR, &IGovernor::stateCall { proposalId: id })
        .await?;
    let votes = client
        .view(GOVERNOR, &IGovernor::proposalVotesCall { proposalId: id })
        .await?;
    let snapshot = client
        .view(
            GOVERNOR,
            &IGovernor::proposalSnapshotCall { proposalId: id },
        )
        .await?;
    let deadline = client
        .view(
            GOVERNOR,
            &IGovernor::proposalDeadlineCall { proposalId: id },
        )
        .await?;
    let eta = client
        .view(GOVERNOR, &IGovernor::proposalEtaCall { proposalId: id })
        .await?;
    let quorum = client
        .view(
            GOVERNOR,
            &IGovernor::quorumCall {
                timepoint: snapshot,
            },
        )
        .await
        .unwrap_or_default();
    let d = details(client, id).await?;
    let actions: Vec<String> = d
        .targets
        .iter()
        .zip(&d.calldatas)
        .map(|(t, c)| {
            if t.is_zero() {
                "signal".into()
            } else {
                format!("{t} {c}")
            }
        })
        .collect();
    common.print(
        json!({"proposalId": id.to_string(), "state": format!("{state:?}"),
               "for": votes.forVotes.to_string(), "against": votes.againstVotes.to_string(),
               "abstain": votes.abstainVotes.to_string(), "quorum": quorum.to_string(),
               "snapshot": snapshot.to_string(), "deadline": deadline.to_string(),
               "eta": eta.to_string(), "targets": d.targets, "calldatas": d.calldatas}),
        format!(
            "Proposal {id}\n  state      {state:?}\n  for        {}\n  against    {}\n  abstain    {}\n  \
             quorum     {}\n  voting     {} to {}\n  eta        {}\n  actions    {}",
            open(votes.forVotes),
            open(votes.againstVotes),
            open(votes.abstainVotes),
            open(quorum),
            date(snapshot),
            date(deadline),
            date(eta),
            actions.join("\n             ")
        ),
    );
    Ok(())
}

async fn list(common: &Common, client: &Client) -> anyhow::Result<()> {
    let count: U256 = client
        .view(GOVERNOR, &IGovernor::proposalCountCall {})
        .await?;
    let mut rows = Vec::new();
    for index in 0..count.to::<u64>() {
        let d = client
            .view(
                GOVERNOR,
                &IGovernor::proposalDetailsAtCall {
                    index: U256::from(index),
                },
            )
            .await?;
        let state = client
            .view(
                GOVERNOR,
                &IGovernor::stateCall {
                    proposalId: d.proposalId,
                },
            )
            .await?;
        rows.push((d.proposalId, state, d.descriptionHash));
    }
    let text = if rows.is_empty() {
        "No proposals yet.".to_string()
    } else {
        rows.iter()
            .map(|(id, state, _)| format!("{state:?}\t{id}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    common.print(
        json!(
            rows.iter()
                .map(|(id, state, hash)| json!({"proposalId": id.to_string(),
            "state": format!("{state:?}"), "descriptionHash": hash}))
                .collect::<Vec<_>>()
        ),
        text,
    );
    Ok(())
}
