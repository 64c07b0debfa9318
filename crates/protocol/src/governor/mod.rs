//! The Governor: GOPEN holders propose, vote on, queue and execute calls to the protocol's
//! privileged functions (see `abi/IGovernor.sol`).
//!
//! It follows OpenZeppelin's Governor so that people and tools who know it find the same
//! functions, states and errors. Two differences: the timelock is built in (a queued proposal
//! waits `timelockDelay` and expires `gracePeriod` later), and actions may only target native
//! modules, which the Governor calls with itself as the caller.

use crate::Result;
use alloy_primitives::{Address, B256, Bytes, Signature, U256, aliases::U48, keccak256};
use alloy_sol_types::{Eip712Domain, SolCall, SolStruct, SolValue, eip712_domain};
use openledger_chain::{ModuleCall, ModuleError};
use openledger_primitives::{Genesis, addresses};

use crate::{
    abi::IGovernor::{self, IGovernorCalls, ProposalState},
    call::{Answer, check_len, emit, emitted, native_module, returns, revert},
    gopen,
    math::{PPM, ppm_of},
    state::governor::{HAS_VOTED, NONCES, PARAMS, PROPOSAL_IDS, PROPOSALS, field, param},
    storage::{Slot, Storage, Word, consecutive},
};

const MAX_ACTIONS: usize = 16;
const MAX_DESCRIPTION: usize = 16 * 1024;
/// Gas for recovering a ballot's signer (as the `ecrecover` precompile).
const RECOVER_GAS: u64 = 3_000;

impl Word for ProposalState {
    fn to_word(self) -> U256 {
        U256::from(self as u8)
    }
    fn from_word(word: U256) -> Self {
        ProposalState::try_from(word.saturating_to::<u8>()).unwrap_or(ProposalState::Pending)
    }
}

native_module! {
    /// The Governor module.
    Governor at addresses::GOVERNOR, named "governor", answers IGovernor::IGovernorCalls,
    payable [], genesis genesis, run run
}

/// The module's storage at genesis, from the genesis file.
fn genesis(genesis: &Genesis) -> Vec<(U256, U256)> {
    let g = &genesis.protocol.governance;
    consecutive(
        PARAMS,
        [
            U256::from(g.voting_delay),
            U256::from(g.voting_period),
            g.proposal_threshold,
            U256::from(g.quorum_ppm),
            U256::from(g.timelock_delay),
            U256::from(g.grace_period),
        ],
    )
}

/// Runs a decoded call on the module's own storage.
fn run(mut s: Storage<'_>, call: &ModuleCall<'_>, decoded: IGovernorCalls) -> Answer {
    let caller = call.caller;
    use IGovernorCalls as C;
    match decoded {
        C::name(_) => Ok(returns(&NAME.to_string())),
        C::version(_) => Ok(returns(&"1".to_string())),
        C::COUNTING_MODE(_) => Ok(returns(&"support=bravo&quorum=for,abstain".to_string())),
        C::token(_) => Ok(returns(&addresses::GOPEN)),
        C::clock(_) => Ok(returns(&U48::from(s.host().timestamp()))),
        C::CLOCK_MODE(_) => Ok(returns(&"mode=timestamp".to_string())),
        C::hashProposal(c) => Ok(returns(&hash_proposal(
            &c.targets,
            &c.values,
            &c.calldatas,
            c.descriptionHash,
        ))),
        C::propose(c) => propose(&mut s, caller, c),
        C::queue(c) => {
            let id = hash_proposal(&c.targets, &c.values, &c.calldatas, c.descriptionHash);
            queue(&mut s, id)
        }
        C::execute(c) => {
            let id = hash_proposal(&c.targets, &c.values, &c.calldatas, c.descriptionHash);
            execute(&mut s, id)
        }
        C::cancel(c) => {
            let id = hash_proposal(&c.targets, &c.values, &c.calldatas, c.descriptionHash);
            cancel(&mut s, caller, id)
        }
        C::state(c) => {
            let state = state(&mut s, c.proposalId)?;
            Ok(IGovernor::stateCall::abi_encode_returns(&state).into())
        }
        C::proposalSnapshot(c) => read_field::<U256>(&mut s, c.proposalId, field::SNAPSHOT),
        C::proposalDeadline(c) => read_field::<U256>(&mut s, c.proposalId, field::DEADLINE),
        C::proposalProposer(c) => read_field::<Address>(&mut s, c.proposalId, field::PROPOSER),
        C::proposalEta(c) => read_field::<U256>(&mut s, c.proposalId, field::ETA),
        C::proposalNeedsQueuing(_) => Ok(returns(&true)),
        C::proposalVotes(c) => {
            let [against, for_, abstain] = votes(&mut s, PROPOSALS.at(c.proposalId))?;
            Ok(
                IGovernor::proposalVotesCall::abi_encode_returns(&IGovernor::proposalVotesReturn {
                    againstVotes: against,
                    forVotes: for_,
                    abstainVotes: abstain,
                })
                .into(),
            )
        }
        C::hasVoted(c) => Ok(returns(
            &s.get::<bool>(HAS_VOTED.at(c.proposalId).at(c.account))?,
        )),
        C::castVote(c) => cast_vote(&mut s, caller, c.proposalId, c.support, String::new()),
        C::castVoteWithReason(c) => {
            check_len(&c.reason, MAX_DESCRIPTION, too_long, "reason")?;
            cast_vote(&mut s, caller, c.proposalId, c.support, c.reason)
        }
        C::castVoteBySig(c) => cast_vote_by_sig(&mut s, c),
        C::nonces(c) => Ok(returns(&s.get::<U256>(NONCES.at(c.owner))?)),
        C::votingDelay(_) => Ok(returns(&param(&mut s, param::VOTING_DELAY)?)),
        C::votingPeriod(_) => Ok(returns(&param(&mut s, param::VOTING_PERIOD)?)),
        C::proposalThreshold(_) => Ok(returns(&param(&mut s, param::THRESHOLD)?)),
        C::quorumNumerator(_) => Ok(returns(&param(&mut s, param::QUORUM_PPM)?)),
        C::quorumDenominator(_) => Ok(returns(&U256::from(PPM))),
        C::timelockDelay(_) => Ok(returns(&param(&mut s, param::TIMELOCK)?)),
        C::gracePeriod(_) => Ok(returns(&param(&mut s, param::GRACE)?)),
        C::quorum(c) => {
            let ppm = param(&mut s, param::QUORUM_PPM)?;
            let at = gopen::past(s.host(), c.timepoint)?;
            Ok(returns(&quorum(&mut s, at, ppm)?))
        }
        C::getVotes(c) => {
            let at = gopen::past(s.host(), c.timepoint)?;
            Ok(returns(&gopen::past_votes(s.host(), c.account, at)?))
        }
        C::proposalCount(_) => Ok(returns(&U256::from(s.len(PROPOSAL_IDS)?))),
        C::proposalDetails(c) => {
            existing(&mut s, c.proposalId)?;
            let (targets, values, calldatas, description_hash) = details(&mut s, c.proposalId)?;
            Ok(IGovernor::proposalDetailsCall::abi_encode_returns(
                &IGovernor::proposalDetailsReturn {
                    targets,
                    values,
                    calldatas,
                    descriptionHash: description_hash,
                },
            )
            .into())
        }
        C::proposalDetailsAt(c) => {
            let count = s.len(PROPOSAL_IDS)?;
            let index = c.index.saturating_to::<u64>();
            if c.index >= U256::from(count) {
                return Err(revert(IGovernor::GovernorNonexistentProposal {
                    proposalId: c.index,
                }));
            }
            let id: U256 = s.item(PROPOSAL_IDS, index)?;
            let (targets, values, calldatas, description_hash) = details(&mut s, id)?;
            Ok(IGovernor::proposalDetailsAtCall::abi_encode_returns(
                &IGovernor::proposalDetailsAtReturn {
                    proposalId: id,
                    targets,
                    values,
                    calldatas,
                    descriptionHash: description_hash,
                },
            )
            .into())
        }
        C::setVotingDelay(c) => {
            let value = U256::from(c.newVotingDelay);
            set_param(&mut s, caller, param::VOTING_DELAY, value, |old, new| {
                IGovernor::VotingDelaySet {
                    oldVotingDelay: old,
                    newVotingDelay: new,
                }
            })
        }
        C::setVotingPeriod(c) => {
            if c.newVotingPeriod == 0 {
                only_governance(caller)?;
                return Err(revert(IGovernor::GovernorInvalidVotingPeriod {
                    votingPeriod: U256::ZERO,
                }));
            }
            let value = U256::from(c.newVotingPeriod);
            set_param(&mut s, caller, param::VOTING_PERIOD, value, |old, new| {
                IGovernor::VotingPeriodSet {
                    oldVotingPeriod: old,
                    newVotingPeriod: new,
                }
            })
        }
        C::setProposalThreshold(c) => set_param(
            &mut s,
            caller,
            param::THRESHOLD,
            c.newProposalThreshold,
            |old, new| IGovernor::ProposalThresholdSet {
                oldProposalThreshold: old,
                newProposalThreshold: new,
            },
        ),
        C::updateQuorumNumerator(c) => {
            if c.newQuorumNumerator > U256::from(PPM) {
                only_governance(caller)?;
                return Err(revert(IGovernor::GovernorInvalidQuorumFraction {
                    quorumNumerator: c.newQuorumNumerator,
                    quorumDenominator: U256::from(PPM),
                }));
            }
            set_param(
                &mut s,
                caller,
                param::QUORUM_PPM,
                c.newQuorumNumerator,
                |old, new| IGovernor::QuorumNumeratorUpdated {
                    oldQuorumNumerator: old,
                    newQuorumNumerator: new,
                },
            )
        }
        C::setTimelockDelay(c) => {
            set_param(&mut s, caller, param::TIMELOCK, c.newDelay, |old, new| {
                IGovernor::TimelockDelaySet {
                    oldDelay: old,
                    newDelay: new,
                }
            })
        }
        C::setGracePeriod(c) => set_param(
            &mut s,
            caller,
            param::GRACE,
            c.newGracePeriod,
            |old, new| IGovernor::GracePeriodSet {
                oldGracePeriod: old,
                newGracePeriod: new,
            },
        ),
    }
}

/// The EIP-712 domain name, also `name()`.
const NAME: &str = "OpenLedger Governor";

/// The EIP-712 domain of ballots.
pub fn domain(chain_id: u64) -> Eip712Domain {
    eip712_domain! {
        name: NAME,
        version: "1",
        chain_id: chain_id,
        verifying_contract: addresses::GOVERNOR,
    }
}

/// OpenZeppelin's proposal id: `keccak256(abi.encode(targets, values, calldatas, descriptionHash))`.
pub fn hash_proposal(
    targets: &[Address],
    values: &[U256],
    calldatas: &[Bytes],
    description_hash: B256,
) -> U256 {
    let encoded = (
        targets.to_vec(),
        values.to_vec(),
        calldatas.to_vec(),
        description_hash,
    )
        .abi_encode_params();
    keccak256(encoded).into()
}

/// The ABI-encoded return data of a call.
type Out = Answer;

fn param(s: &mut Storage<'_>, index: u8) -> Result<U256> {
    s.get(PARAMS.field(index))
}

/// The Governor's own settings change only through its proposals.
fn only_governance(caller: Address) -> Result<()> {
    if caller != addresses::GOVERNOR {
        return Err(revert(IGovernor::GovernorOnlyExecutor { account: caller }));
    }
    Ok(())
}

/// Sets a parameter (only through a proposal) and emits `event(old, new)`.
fn set_param<E: alloy_sol_types::SolEvent>(
    s: &mut Storage<'_>,
    caller: Address,
    index: u8,
    value: U256,
    event: impl Fn(U256, U256) -> E,
) -> Out {
    only_governance(caller)?;
    let old = param(s, index)?;
    s.set(PARAMS.field(index), value)?;
    emitted(s.host(), &event(old, value))
}

fn propose(s: &mut Storage<'_>, caller: Address, c: IGovernor::proposeCall) -> Out {
    let n = c.targets.len();
    if n == 0 || n > MAX_ACTIONS || c.values.len() != n || c.calldatas.len() != n {
        return Err(revert(IGovernor::GovernorInvalidProposalLength {
            targets: U256::from(n),
            calldatas: U256::from(c.calldatas.len()),
            values: U256::from(c.values.len()),
        }));
    }
    check_len(&c.description, MAX_DESCRIPTION, too_long, "description")?;
    for ((&target, value), data) in c.targets.iter().zip(&c.values).zip(&c.calldatas) {
        let signal = target.is_zero() && value.is_zero() && data.is_empty();
        if !signal && !addresses::ALL.contains(&target) {
            return Err(revert(IGovernor::GovernorInvalidTarget { target }));
        }
    }
    let now = s.host().timestamp();
    if caller != addresses::FEEDBACK {
        let threshold = param(s, param::THRESHOLD)?;
        let votes = gopen::past_votes(s.host(), caller, now.saturating_sub(1))?;
        if votes < threshold {
            return Err(revert(IGovernor::GovernorInsufficientProposerVotes {
                proposer: caller,
                votes,
                threshold,
            }));
        }
    }
    let description_hash = keccak256(c.description.as_bytes());
    let id = hash_proposal(&c.targets, &c.values, &c.calldatas, description_hash);
    let base = PROPOSALS.at(id);
    if s.get::<u64>(base.field(field::SNAPSHOT))? != 0 {
        let current = state(s, id)?;
        return Err(unexpected(id, current, &[]));
    }
    let delay: u64 = param(s, param::VOTING_DELAY)?.saturating_to();
    let period: u64 = param(s, param::VOTING_PERIOD)?.saturating_to();
    let snapshot = now.saturating_add(delay);
    let deadline = snapshot.saturating_add(period);
    let quorum_ppm = param(s, param::QUORUM_PPM)?;
    s.set(base.field(field::PROPOSER), caller)?;
    s.set(base.field(field::SNAPSHOT), snapshot)?;
    s.set(base.field(field::DEADLINE), deadline)?;
    s.set(base.field(field::QUORUM_PPM), quorum_ppm)?;
    s.set_items(base.field(field::TARGETS), c.targets.clone())?;
    s.set_items(base.field(field::VALUES), c.values.clone())?;
    s.set_bytes_items(base.field(field::CALLDATAS), &c.calldatas)?;
    s.set(base.field(field::DESCRIPTION), description_hash)?;
    s.push(PROPOSAL_IDS, id)?;
    emit(
        s.host(),
        &IGovernor::ProposalCreated {
            proposalId: id,
            proposer: caller,
            signatures: vec![String::new(); n],
            targets: c.targets,
            values: c.values,
            calldatas: c.calldatas,
            voteStart: U256::from(snapshot),
            voteEnd: U256::from(deadline),
            description: c.description,
        },
    )?;
    Ok(IGovernor::proposeCall::abi_encode_returns(&id).into())
}

fn queue(s: &mut Storage<'_>, id: U256) -> Out {
    require_state(s, id, ProposalState::Succeeded)?;
    let delay: u64 = param(s, param::TIMELOCK)?.saturating_to();
    let eta = s.host().timestamp().saturating_add(delay);
    s.set(PROPOSALS.at(id).field(field::ETA), eta)?;
    emit(
        s.host(),
        &IGovernor::ProposalQueued {
            proposalId: id,
            etaSeconds: U256::from(eta),
        },
    )?;
    Ok(returns(&id))
}

fn execute(s: &mut Storage<'_>, id: U256) -> Out {
    require_state(s, id, ProposalState::Queued)?;
    let base = PROPOSALS.at(id);
    let eta: u64 = s.get(base.field(field::ETA))?;
    if s.host().timestamp() < eta {
        return Err(revert(IGovernor::GovernorNotReady {
            proposalId: id,
            etaSeconds: U256::from(eta),
        }));
    }
    // Marked first, so that an action cannot execute the proposal again.
    s.set(base.field(field::EXECUTED), true)?;
    let (targets, values, calldatas, _) = details(s, id)?;
    for ((target, value), data) in targets.into_iter().zip(values).zip(calldatas) {
        if !target.is_zero() {
            s.host().call_module(target, &data, value)?;
        }
    }
    emit(s.host(), &IGovernor::ProposalExecuted { proposalId: id })?;
    Ok(returns(&id))
}

fn cancel(s: &mut Storage<'_>, caller: Address, id: U256) -> Out {
    require_state(s, id, ProposalState::Pending)?;
    let base = PROPOSALS.at(id);
    if s.get::<Address>(base.field(field::PROPOSER))? != caller {
        return Err(revert(IGovernor::GovernorOnlyProposer { account: caller }));
    }
    s.set(base.field(field::CANCELED), true)?;
    emit(s.host(), &IGovernor::ProposalCanceled { proposalId: id })?;
    Ok(returns(&id))
}

fn cast_vote(s: &mut Storage<'_>, voter: Address, id: U256, support: u8, reason: String) -> Out {
    require_state(s, id, ProposalState::Active)?;
    if support > 2 {
        return Err(revert(IGovernor::GovernorInvalidVoteType {}));
    }
    let voted = HAS_VOTED.at(id).at(voter);
    if s.get::<bool>(voted)? {
        return Err(revert(IGovernor::GovernorAlreadyCastVote { voter }));
    }
    let base = PROPOSALS.at(id);
    let snapshot: u64 = s.get(base.field(field::SNAPSHOT))?;
    let weight = gopen::past_votes(s.host(), voter, snapshot)?;
    s.set(voted, true)?;
    s.add(base.field(field::VOTES + support), weight)?;
    emit(
        s.host(),
        &IGovernor::VoteCast {
            voter,
            proposalId: id,
            support,
            weight,
            reason,
        },
    )?;
    Ok(returns(&weight))
}

fn cast_vote_by_sig(s: &mut Storage<'_>, c: IGovernor::castVoteBySigCall) -> Out {
    let nonce_slot = NONCES.at(c.voter);
    let nonce: U256 = s.get(nonce_slot)?;
    let ballot = IGovernor::Ballot {
        proposalId: c.proposalId,
        support: c.support,
        voter: c.voter,
        nonce,
    };
    let digest = ballot.eip712_signing_hash(&domain(s.host().chain_id()));
    s.host().charge(RECOVER_GAS)?;
    let signer = Signature::from_raw(&c.signature)
        .ok()
        .and_then(|sig| sig.recover_address_from_prehash(&digest).ok());
    if signer != Some(c.voter) {
        return Err(revert(IGovernor::GovernorInvalidSignature {
            voter: c.voter,
        }));
    }
    s.set(nonce_slot, nonce + U256::from(1))?;
    cast_vote(s, c.voter, c.proposalId, c.support, String::new())
}

/// A proposal's state, as OpenZeppelin's `state()` (plus the timelock's Expired).
pub fn state(s: &mut Storage<'_>, id: U256) -> Result<ProposalState> {
    let base = existing(s, id)?;
    if s.get::<bool>(base.field(field::EXECUTED))? {
        return Ok(ProposalState::Executed);
    }
    if s.get::<bool>(base.field(field::CANCELED))? {
        return Ok(ProposalState::Canceled);
    }
    let now = s.host().timestamp();
    let snapshot: u64 = s.get(base.field(field::SNAPSHOT))?;
    if snapshot >= now {
        return Ok(ProposalState::Pending);
    }
    let deadline: u64 = s.get(base.field(field::DEADLINE))?;
    if deadline >= now {
        return Ok(ProposalState::Active);
    }
    let [against, for_, abstain] = votes(s, base)?;
    let quorum_ppm: U256 = s.get(base.field(field::QUORUM_PPM))?;
    let needed = quorum(s, snapshot, quorum_ppm)?;
    if for_ + abstain < needed || for_ <= against {
        return Ok(ProposalState::Defeated);
    }
    let eta: u64 = s.get(base.field(field::ETA))?;
    if eta == 0 {
        return Ok(ProposalState::Succeeded);
    }
    let grace: u64 = param(s, param::GRACE)?.saturating_to();
    if now >= eta.saturating_add(grace) {
        return Ok(ProposalState::Expired);
    }
    Ok(ProposalState::Queued)
}

fn require_state(s: &mut Storage<'_>, id: U256, required: ProposalState) -> Result<()> {
    let current = state(s, id)?;
    if current != required {
        return Err(unexpected(id, current, &[required]));
    }
    Ok(())
}

/// OpenZeppelin's `GovernorUnexpectedProposalState`, with the expected states as a bitmap.
fn unexpected(id: U256, current: ProposalState, expected: &[ProposalState]) -> ModuleError {
    let bits = expected.iter().fold(U256::ZERO, |acc, &state| {
        acc | (U256::from(1) << (state as u8))
    });
    revert(IGovernor::GovernorUnexpectedProposalState {
        proposalId: id,
        current,
        expectedStates: bits.into(),
    })
}

fn existing(s: &mut Storage<'_>, id: U256) -> Result<Slot> {
    let base = PROPOSALS.at(id);
    if s.get::<u64>(base.field(field::SNAPSHOT))? == 0 {
        return Err(revert(IGovernor::GovernorNonexistentProposal {
            proposalId: id,
        }));
    }
    Ok(base)
}

fn read_field<T: Word + SolValue>(s: &mut Storage<'_>, id: U256, index: u8) -> Out {
    let base = existing(s, id)?;
    Ok(returns(&s.get::<T>(base.field(index))?))
}

fn votes(s: &mut Storage<'_>, base: Slot) -> Result<[U256; 3]> {
    Ok([
        s.get(base.field(field::VOTES))?,
        s.get(base.field(field::VOTES + 1))?,
        s.get(base.field(field::VOTES + 2))?,
    ])
}

type Details = (Vec<Address>, Vec<U256>, Vec<Bytes>, B256);

fn details(s: &mut Storage<'_>, id: U256) -> Result<Details> {
    let base = PROPOSALS.at(id);
    let calldatas = s.get_bytes_items(base.field(field::CALLDATAS))?;
    Ok((
        s.items(base.field(field::TARGETS), 0, u64::MAX)?,
        s.items(base.field(field::VALUES), 0, u64::MAX)?,
        calldatas.into_iter().map(Bytes::from).collect(),
        s.get(base.field(field::DESCRIPTION))?,
    ))
}

/// The votes needed at `timepoint` for a quorum of `ppm`.
fn quorum(s: &mut Storage<'_>, timepoint: u64, ppm: U256) -> Result<U256> {
    let supply = gopen::past_total_supply(s.host(), timepoint)?;
    Ok(ppm_of(supply, ppm))
}

fn too_long(field: String, max: usize) -> IGovernor::TooLong {
    IGovernor::TooLong {
        field,
        max: U256::from(max),
    }
}

#[cfg(test)]
mod tests;
