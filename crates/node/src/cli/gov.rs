//! `openledger gov ...`: GOPEN and the Governor.

use std::fmt;

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_rpc_types_eth::TransactionReceipt;
use alloy_sol_types::{SolCall, SolValue};
use clap::{Args, Subcommand, ValueEnum};
use openledger_primitives::addresses::{GOPEN, GOVERNOR, MODELS, STAKING, TREASURY};
use openledger_protocol::abi::{IGOPEN, IGovernor, IModels, IStaking, ITreasury};
use serde::Serialize;

use super::report::{Id, Sent, Wei};
use super::{Client, Common, block_on, date, event, events, parse_open};

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
        let voted = match args.command {
            GovCommand::Show { proposal: Some(id) } => {
                return common.report(&show(&client, id).await?);
            }
            GovCommand::Show { proposal: None } => return common.report(&list(&client).await?),
            GovCommand::Deposit { amount } => {
                let receipt = client.send(GOPEN, &IGOPEN::depositCall {}, amount).await?;
                let account = client.sender()?;
                let delegate = client
                    .view(GOPEN, &IGOPEN::delegatesCall { account })
                    .await?;
                let mut said = format!("Wrapped {} into GOPEN", Wei(amount));
                if delegate.is_zero() {
                    let call = IGOPEN::delegateCall { delegatee: account };
                    client.send(GOPEN, &call, U256::ZERO).await?;
                    said.push_str(" and delegated its votes to yourself");
                }
                Governed::new(&receipt, said).amount(amount)
            }
            GovCommand::Withdraw { amount } => {
                let call = IGOPEN::withdrawCall { amount };
                let receipt = client.send(GOPEN, &call, U256::ZERO).await?;
                Governed::new(&receipt, format!("Unwrapped {} of GOPEN", Wei(amount)))
                    .amount(amount)
            }
            GovCommand::Delegate { to } => {
                let call = IGOPEN::delegateCall { delegatee: to };
                let receipt = client.send(GOPEN, &call, U256::ZERO).await?;
                Governed {
                    delegate: Some(to),
                    ..Governed::new(&receipt, format!("Delegated your votes to {to}"))
                }
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
                let event = event::<IGovernor::ProposalCreated>(&receipt)?;
                let id = event.proposalId;
                let (start, end) = (date(event.voteStart), date(event.voteEnd));
                let said = format!("Proposed {id}\n  voting from {start} to {end}");
                Governed::new(&receipt, said).proposal(id)
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
                let said = format!(
                    "Voted {support:?} on proposal {proposal} with {} GOPEN of votes",
                    openledger_primitives::format_open(weight)
                );
                Governed {
                    weight: Some(Wei(weight)),
                    ..Governed::new(&receipt, said).proposal(proposal)
                }
            }
            GovCommand::Queue { proposal } => {
                let call: IGovernor::queueCall = stored_call(&client, proposal).await?;
                let receipt = client.send(GOVERNOR, &call, U256::ZERO).await?;
                let eta = events::<IGovernor::ProposalQueued>(&receipt)
                    .pop()
                    .map(|e| e.etaSeconds)
                    .unwrap_or_default();
                let said = format!("Queued {proposal}; executable from {}", date(eta));
                Governed {
                    eta: Some(Id(eta)),
                    ..Governed::new(&receipt, said).proposal(proposal)
                }
            }
            GovCommand::Execute { proposal } => {
                let call: IGovernor::executeCall = stored_call(&client, proposal).await?;
                let receipt = client.send(GOVERNOR, &call, U256::ZERO).await?;
                Governed::new(&receipt, format!("Executed {proposal}")).proposal(proposal)
            }
        };
        common.report(&voted)
    })
}

/// A governance transaction: GOPEN wrapped, unwrapped or delegated, or a proposal made, voted
/// on, queued or executed, with what each says of it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Governed {
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Wei>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delegate: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proposal_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<Wei>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eta: Option<Id>,
    #[serde(flatten)]
    sent: Sent,
}

impl Governed {
    fn new(receipt: &TransactionReceipt, said: String) -> Self {
        Self {
            amount: None,
            delegate: None,
            proposal_id: None,
            weight: None,
            eta: None,
            sent: Sent::new(receipt, said),
        }
    }

    fn amount(self, amount: U256) -> Self {
        Self {
            amount: Some(Wei(amount)),
            ..self
        }
    }

    fn proposal(self, id: U256) -> Self {
        Self {
            proposal_id: Some(Id(id)),
            ..self
        }
    }
}

impl fmt::Display for Governed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.sent.fmt(f)
    }
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

/// A proposal, its votes and actions.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Proposal {
    proposal_id: Id,
    state: String,
    #[serde(rename = "for")]
    for_votes: Wei,
    against: Wei,
    abstain: Wei,
    quorum: Wei,
    snapshot: Id,
    deadline: Id,
    eta: Id,
    targets: Vec<Address>,
    calldatas: Vec<Bytes>,
}

async fn show(client: &Client, id: U256) -> anyhow::Result<Proposal> {
    let state = client
        .view(GOVERNOR, &IGovernor::stateCall { proposalId: id })
        .await?;
    let votes = client
        .view(GOVERNOR, &IGovernor::proposalVotesCall { proposalId: id })
        .await?;
    let snapshot = IGovernor::proposalSnapshotCall { proposalId: id };
    let snapshot = client.view(GOVERNOR, &snapshot).await?;
    let deadline = IGovernor::proposalDeadlineCall { proposalId: id };
    let deadline = client.view(GOVERNOR, &deadline).await?;
    let eta = client
        .view(GOVERNOR, &IGovernor::proposalEtaCall { proposalId: id })
        .await?;
    let quorum = IGovernor::quorumCall {
        timepoint: snapshot,
    };
    let quorum = client.view(GOVERNOR, &quorum).await.unwrap_or_default();
    let d = details(client, id).await?;
    Ok(Proposal {
        proposal_id: Id(id),
        state: format!("{state:?}"),
        for_votes: Wei(votes.forVotes),
        against: Wei(votes.againstVotes),
        abstain: Wei(votes.abstainVotes),
        quorum: Wei(quorum),
        snapshot: Id(snapshot),
        deadline: Id(deadline),
        eta: Id(eta),
        targets: d.targets,
        calldatas: d.calldatas,
    })
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Proposal {}", self.proposal_id)?;
        writeln!(f, "  state      {}", self.state)?;
        writeln!(f, "  for        {}", self.for_votes)?;
        writeln!(f, "  against    {}", self.against)?;
        writeln!(f, "  abstain    {}", self.abstain)?;
        writeln!(f, "  quorum     {}", self.quorum)?;
        let (from, to) = (date(self.snapshot.0), date(self.deadline.0));
        writeln!(f, "  voting     {from} to {to}")?;
        writeln!(f, "  eta        {}", date(self.eta.0))?;
        let actions: Vec<String> = self
            .targets
            .iter()
            .zip(&self.calldatas)
            .map(|(t, c)| {
                if t.is_zero() {
                    "signal".into()
                } else {
                    format!("{t} {c}")
                }
            })
            .collect();
        write!(f, "  actions    {}", actions.join("\n             "))
    }
}

/// A proposal in the list of all.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    proposal_id: Id,
    state: String,
    description_hash: B256,
}

/// Every proposal, one a line in text.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Proposals(Vec<Listed>);

async fn list(client: &Client) -> anyhow::Result<Proposals> {
    let count: U256 = client
        .view(GOVERNOR, &IGovernor::proposalCountCall {})
        .await?;
    let mut all = Vec::new();
    for index in 0..count.to::<u64>() {
        let at = IGovernor::proposalDetailsAtCall {
            index: U256::from(index),
        };
        let d = client.view(GOVERNOR, &at).await?;
        let state = IGovernor::stateCall {
            proposalId: d.proposalId,
        };
        let state = client.view(GOVERNOR, &state).await?;
        all.push(Listed {
            proposal_id: Id(d.proposalId),
            state: format!("{state:?}"),
            description_hash: d.descriptionHash,
        });
    }
    Ok(Proposals(all))
}

impl fmt::Display for Proposals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("No proposals yet.");
        }
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|p| format!("{}\t{}", p.state, p.proposal_id))
            .collect();
        f.write_str(&lines.join("\n"))
    }
}
