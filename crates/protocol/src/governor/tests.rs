use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolStruct, SolValue};

use super::{Governor, domain, hash_proposal};
use crate::{
    abi::{
        IGOPEN,
        IGovernor::{self, ProposalState},
        IModels::{self, Status},
    },
    testing::{Fixture, account, assert_reverts, milli},
};

const DAY: u64 = 86_400;

/// A proposal's actions and description.
struct Proposal {
    targets: Vec<Address>,
    values: Vec<U256>,
    calldatas: Vec<Bytes>,
    description: String,
}

impl Proposal {
    fn new(actions: Vec<(Address, Bytes)>, description: &str) -> Self {
        Self {
            values: vec![U256::ZERO; actions.len()],
            targets: actions.iter().map(|(t, _)| *t).collect(),
            calldatas: actions.into_iter().map(|(_, d)| d).collect(),
            description: description.into(),
        }
    }

    fn approve_model(model: U256) -> Self {
        let call = IModels::approveModelCall { modelId: model }.abi_encode();
        Self::new(
            vec![(openledger_primitives::addresses::MODELS, call.into())],
            "Approve the clinical model",
        )
    }

    fn id(&self) -> U256 {
        hash_proposal(
            &self.targets,
            &self.values,
            &self.calldatas,
            keccak256(&self.description),
        )
    }

    fn propose_call(&self) -> IGovernor::proposeCall {
        IGovernor::proposeCall {
            targets: self.targets.clone(),
            values: self.values.clone(),
            calldatas: self.calldatas.clone(),
            description: self.description.clone(),
        }
    }

    /// `queue`, `execute` or `cancel` of this proposal: the three take its actions and
    /// description hash alike.
    fn action<C: SolCall>(&self) -> C {
        let args = (
            self.targets.clone(),
            self.values.clone(),
            self.calldatas.clone(),
            keccak256(&self.description),
        );
        C::abi_decode_raw(&args.abi_encode_params()).expect("a call on the proposal's actions")
    }
}

fn gov<C: SolCall>(
    f: &mut Fixture,
    caller: Address,
    call: &C,
) -> Result<C::Return, openledger_chain::ModuleError> {
    f.host.send(&Governor, caller, U256::ZERO, call)
}

fn vote(
    f: &mut Fixture,
    voter: Address,
    id: U256,
    support: u8,
) -> Result<U256, openledger_chain::ModuleError> {
    gov(
        f,
        voter,
        &IGovernor::castVoteCall {
            proposalId: id,
            support,
        },
    )
}

/// Proposes `p` as account 1, votes it through alone and queues it; returns its id.
fn queued(f: &mut Fixture, p: &Proposal) -> U256 {
    let t0 = f.host.timestamp;
    let id = gov(f, account(1), &p.propose_call()).unwrap();
    f.host.timestamp = t0 + DAY + 1;
    vote(f, account(1), id, 1).unwrap();
    f.host.timestamp = t0 + 15 * DAY + 1;
    gov(f, account(1), &p.action::<IGovernor::queueCall>()).unwrap();
    id
}

fn state(f: &mut Fixture, id: U256) -> ProposalState {
    f.host
        .view(&Governor, &IGovernor::stateCall { proposalId: id })
}

/// Wraps `open` thousandths of OPEN into GOPEN for `who` and self-delegates.
fn voter(f: &mut Fixture, who: Address, open: u64) {
    f.gopen(who, milli(open), &IGOPEN::depositCall {}).unwrap();
    f.gopen(who, U256::ZERO, &IGOPEN::delegateCall { delegatee: who })
        .unwrap();
}

/// Three voters (400, 300 and 300 OPEN of GOPEN, 1 second before now) and a proposed model.
fn setup() -> (Fixture, U256) {
    let mut f = Fixture::new();
    let datanet = f.datanet(account(1), true);
    let model = f
        .models(
            account(4),
            &IModels::proposeModelCall {
                name: "clinical".into(),
                baseModel: "tiny".into(),
                datanetIds: vec![datanet],
                metadataHash: B256::ZERO,
            },
        )
        .unwrap();
    voter(&mut f, account(1), 400_000);
    voter(&mut f, account(2), 300_000);
    voter(&mut f, account(3), 300_000);
    f.host.timestamp += 1;
    (f, model)
}

#[test]
fn a_proposal_goes_from_pending_to_executed_and_approves_a_model() {
    let (mut f, model) = setup();
    let p = Proposal::approve_model(model);
    let t0 = f.host.timestamp;
    let id = gov(&mut f, account(1), &p.propose_call()).unwrap();
    assert_eq!(id, p.id());
    assert_eq!(state(&mut f, id), ProposalState::Pending);
    let snapshot = f.host.view(
        &Governor,
        &IGovernor::proposalSnapshotCall { proposalId: id },
    );
    assert_eq!(snapshot, U256::from(t0 + DAY));
    assert_reverts(
        vote(&mut f, account(2), id, 1),
        unexpected_state(id, ProposalState::Pending, ProposalState::Active),
    );

    f.host.timestamp = t0 + DAY + 1;
    assert_eq!(state(&mut f, id), ProposalState::Active);
    let weight = vote(&mut f, account(1), id, 1).unwrap();
    assert_eq!(weight, milli(400_000));
    vote(&mut f, account(2), id, 0).unwrap();
    gov(
        &mut f,
        account(3),
        &IGovernor::castVoteWithReasonCall {
            proposalId: id,
            support: 2,
            reason: "no opinion".into(),
        },
    )
    .unwrap();
    assert_reverts(
        vote(&mut f, account(1), id, 1),
        IGovernor::GovernorAlreadyCastVote { voter: account(1) },
    );
    let votes = f
        .host
        .view(&Governor, &IGovernor::proposalVotesCall { proposalId: id });
    assert_eq!(
        (votes.againstVotes, votes.forVotes, votes.abstainVotes),
        (milli(300_000), milli(400_000), milli(300_000))
    );

    f.host.timestamp = t0 + 15 * DAY + 1;
    assert_eq!(state(&mut f, id), ProposalState::Succeeded);
    gov(&mut f, account(9), &p.action::<IGovernor::queueCall>()).unwrap();
    assert_eq!(state(&mut f, id), ProposalState::Queued);
    let eta = f
        .host
        .view(&Governor, &IGovernor::proposalEtaCall { proposalId: id });
    assert_reverts(
        gov(&mut f, account(9), &p.action::<IGovernor::executeCall>()),
        IGovernor::GovernorNotReady {
            proposalId: id,
            etaSeconds: eta,
        },
    );
    f.host.timestamp = eta.to::<u64>();
    assert_eq!(f.model_status(model), Status::Proposed);
    gov(&mut f, account(9), &p.action::<IGovernor::executeCall>()).unwrap();
    assert_eq!(state(&mut f, id), ProposalState::Executed);
    assert_eq!(f.model_status(model), Status::Approved);
    let approved = f.host.events::<IModels::ModelApproved>();
    assert_eq!(
        approved.last().unwrap().approver,
        openledger_primitives::addresses::GOVERNOR
    );
}

fn unexpected_state(
    id: U256,
    current: ProposalState,
    expected: ProposalState,
) -> IGovernor::GovernorUnexpectedProposalState {
    IGovernor::GovernorUnexpectedProposalState {
        proposalId: id,
        current,
        expectedStates: (U256::from(1) << (expected as u8)).into(),
    }
}

#[test]
fn proposals_need_threshold_votes_and_module_targets() {
    let (mut f, model) = setup();
    let p = Proposal::approve_model(model);
    assert_reverts(
        gov(&mut f, account(5), &p.propose_call()),
        IGovernor::GovernorInsufficientProposerVotes {
            proposer: account(5),
            votes: U256::ZERO,
            threshold: milli(100_000),
        },
    );
    let bad = Proposal::new(vec![(account(7), Bytes::new())], "pay someone");
    assert_reverts(
        gov(&mut f, account(1), &bad.propose_call()),
        IGovernor::GovernorInvalidTarget { target: account(7) },
    );
    let signal = Proposal::new(vec![(Address::ZERO, Bytes::new())], "We like open data");
    let id = gov(&mut f, account(1), &signal.propose_call()).unwrap();
    assert_reverts(
        gov(&mut f, account(1), &signal.propose_call()),
        IGovernor::GovernorUnexpectedProposalState {
            proposalId: id,
            current: ProposalState::Pending,
            expectedStates: B256::ZERO,
        },
    );
    let mut uneven = Proposal::approve_model(model);
    uneven.values.push(U256::ZERO);
    assert_reverts(
        gov(&mut f, account(1), &uneven.propose_call()),
        IGovernor::GovernorInvalidProposalLength {
            targets: U256::from(1),
            calldatas: U256::from(1),
            values: U256::from(2),
        },
    );
}

#[test]
fn without_quorum_or_majority_a_proposal_is_defeated() {
    let (mut f, model) = setup();
    voter(&mut f, account(6), 200_000);
    f.host.timestamp += 1;
    let t0 = f.host.timestamp;
    // Supply 1,200 GOPEN at the snapshot: the quorum is 300.
    let quiet = Proposal::new(vec![(Address::ZERO, Bytes::new())], "turnout too low");
    let lost = Proposal::approve_model(model);
    let quiet_id = gov(&mut f, account(1), &quiet.propose_call()).unwrap();
    let lost_id = gov(&mut f, account(1), &lost.propose_call()).unwrap();
    f.host.timestamp = t0 + DAY + 1;
    // GOPEN bought after the snapshot does not vote.
    voter(&mut f, account(7), 900_000);
    let weight = vote(&mut f, account(7), quiet_id, 1).unwrap();
    assert_eq!(weight, U256::ZERO);
    vote(&mut f, account(6), quiet_id, 1).unwrap();
    // 300 For against 400: quorum reached, majority not.
    vote(&mut f, account(3), lost_id, 1).unwrap();
    vote(&mut f, account(1), lost_id, 0).unwrap();
    f.host.timestamp = t0 + 15 * DAY + 1;
    let quorum = f.host.view(
        &Governor,
        &IGovernor::quorumCall {
            timepoint: U256::from(t0 + DAY),
        },
    );
    assert_eq!(quorum, milli(300_000));
    assert_eq!(state(&mut f, quiet_id), ProposalState::Defeated);
    assert_eq!(state(&mut f, lost_id), ProposalState::Defeated);
    assert_reverts(
        gov(&mut f, account(1), &lost.action::<IGovernor::queueCall>()),
        unexpected_state(lost_id, ProposalState::Defeated, ProposalState::Succeeded),
    );
}

#[test]
fn a_queued_proposal_expires_after_the_grace_period() {
    let (mut f, model) = setup();
    let p = Proposal::approve_model(model);
    let id = queued(&mut f, &p);
    let eta = f
        .host
        .view(&Governor, &IGovernor::proposalEtaCall { proposalId: id })
        .to::<u64>();
    // Executable for the 14-day grace period after its eta, then expired.
    f.host.timestamp = eta + 14 * DAY - 1;
    assert_eq!(state(&mut f, id), ProposalState::Queued);
    f.host.timestamp = eta + 14 * DAY;
    assert_eq!(state(&mut f, id), ProposalState::Expired);
    assert_reverts(
        gov(&mut f, account(1), &p.action::<IGovernor::executeCall>()),
        unexpected_state(id, ProposalState::Expired, ProposalState::Queued),
    );
    assert_eq!(f.model_status(model), Status::Proposed);
}

#[test]
fn only_the_proposer_cancels_and_only_while_pending() {
    let (mut f, model) = setup();
    let p = Proposal::approve_model(model);
    let t0 = f.host.timestamp;
    let id = gov(&mut f, account(1), &p.propose_call()).unwrap();
    assert_reverts(
        gov(&mut f, account(2), &p.action::<IGovernor::cancelCall>()),
        IGovernor::GovernorOnlyProposer {
            account: account(2),
        },
    );
    gov(&mut f, account(1), &p.action::<IGovernor::cancelCall>()).unwrap();
    assert_eq!(state(&mut f, id), ProposalState::Canceled);
    f.host.timestamp = t0 + DAY + 1;
    assert_reverts(
        vote(&mut f, account(1), id, 1),
        unexpected_state(id, ProposalState::Canceled, ProposalState::Active),
    );
}

#[test]
fn a_failing_action_reverts_the_execution_and_leaves_the_proposal_queued() {
    let (mut f, model) = setup();
    // Approving the same model twice: the second action fails with WrongStatus.
    let call: Bytes = IModels::approveModelCall { modelId: model }
        .abi_encode()
        .into();
    let p = Proposal::new(
        vec![
            (openledger_primitives::addresses::MODELS, call.clone()),
            (openledger_primitives::addresses::MODELS, call),
        ],
        "approve twice",
    );
    let id = queued(&mut f, &p);
    f.host.timestamp += DAY;
    assert_reverts(
        gov(&mut f, account(1), &p.action::<IGovernor::executeCall>()),
        IModels::WrongStatus {
            modelId: model,
            status: Status::Approved,
            required: Status::Proposed,
        },
    );
    assert_eq!(state(&mut f, id), ProposalState::Queued);
    assert_eq!(f.model_status(model), Status::Proposed);
}

#[test]
fn votes_by_signature_count_once() {
    let (mut f, model) = setup();
    let signer = PrivateKeySigner::random();
    let voter_address = signer.address();
    f.host.fund(voter_address, milli(500_000));
    voter(&mut f, voter_address, 500_000);
    f.host.timestamp += 1;
    let p = Proposal::approve_model(model);
    let id = gov(&mut f, account(1), &p.propose_call()).unwrap();
    f.host.timestamp += DAY + 1;
    let ballot = IGovernor::Ballot {
        proposalId: id,
        support: 1,
        voter: voter_address,
        nonce: U256::ZERO,
    };
    let digest = ballot.eip712_signing_hash(&domain(f.host.chain_id));
    let signature = signer.sign_hash_sync(&digest).unwrap().as_bytes().to_vec();
    let by_sig = IGovernor::castVoteBySigCall {
        proposalId: id,
        support: 1,
        voter: voter_address,
        signature: signature.into(),
    };
    // Anyone may relay it; the vote is the signer's.
    let weight = gov(&mut f, account(9), &by_sig).unwrap();
    assert_eq!(weight, milli(500_000));
    assert!(f.host.view(
        &Governor,
        &IGovernor::hasVotedCall {
            proposalId: id,
            account: voter_address
        }
    ));
    // Replaying it fails: the nonce moved on, so the signature no longer matches.
    assert_reverts(
        gov(&mut f, account(9), &by_sig),
        IGovernor::GovernorInvalidSignature {
            voter: voter_address,
        },
    );
}

#[test]
fn settings_change_only_through_proposals() {
    let (mut f, _) = setup();
    assert_reverts(
        gov(
            &mut f,
            account(1),
            &IGovernor::setVotingPeriodCall {
                newVotingPeriod: 60,
            },
        ),
        IGovernor::GovernorOnlyExecutor {
            account: account(1),
        },
    );
    let call: Bytes = IGovernor::setVotingPeriodCall {
        newVotingPeriod: 60,
    }
    .abi_encode()
    .into();
    let p = Proposal::new(
        vec![(openledger_primitives::addresses::GOVERNOR, call)],
        "Vote for a minute",
    );
    let id = queued(&mut f, &p);
    f.host.timestamp += DAY;
    gov(&mut f, account(1), &p.action::<IGovernor::executeCall>()).unwrap();
    let period = f.host.view(&Governor, &IGovernor::votingPeriodCall {});
    assert_eq!(period, U256::from(60));
    let details = f.host.view(
        &Governor,
        &IGovernor::proposalDetailsAtCall { index: U256::ZERO },
    );
    assert_eq!(details.proposalId, id);
    assert_eq!(details.calldatas, p.calldatas);
}
