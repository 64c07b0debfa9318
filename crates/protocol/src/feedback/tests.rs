use crate::Result;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use openledger_primitives::addresses;
use proptest::prelude::*;

use super::{Feedback, commitment, weighted_median};
use crate::{
    abi::{
        IFeedback::{self, Phase},
        IGovernor::{self, ProposalState},
        IStaking,
    },
    governor::Governor,
    testing::{Fixture, account, assert_reverts, milli},
};

const DAY: u64 = 86_400;
const MODEL: U256 = U256::from_limbs([1, 0, 0, 0]);

fn open(n: u64) -> U256 {
    milli(n * 1_000)
}

/// A validator's rating: score, harmful flag, and whether it is revealed.
#[derive(Clone, Copy)]
struct Vote(u8, bool, bool);

const fn agree(score: u8) -> Vote {
    Vote(score, false, true)
}

/// Validators rating receipts that Settlement records (played here by calling as Settlement).
struct Panel {
    f: Fixture,
    receipts: u8,
}

impl Panel {
    /// Validators `account(1..)` registered with the given stakes in OPEN.
    fn new(stakes: &[u64]) -> Self {
        let mut f = Fixture::new();
        for (i, &stake) in stakes.iter().enumerate() {
            f.feedback(
                account(i as u8 + 1),
                open(stake),
                &IFeedback::registerValidatorCall {},
            )
            .unwrap();
        }
        Self { f, receipts: 0 }
    }

    /// A fresh receipt of [`MODEL`] funded with `reward`.
    fn receipt(&mut self, reward: U256) -> B256 {
        self.receipts += 1;
        let id = B256::repeat_byte(self.receipts);
        self.f.host.fund(addresses::SETTLEMENT, reward);
        self.f
            .feedback(
                addresses::SETTLEMENT,
                reward,
                &IFeedback::recordReceiptCall {
                    receiptId: id,
                    modelId: MODEL,
                    promptHash: B256::repeat_byte(0xaa),
                    outputHash: B256::repeat_byte(0xbb),
                },
            )
            .unwrap();
        id
    }

    fn reveal_call(&self, id: B256, validator: Address, vote: Vote) -> IFeedback::revealCall {
        IFeedback::revealCall {
            receiptId: id,
            score: vote.0,
            harmful: vote.1,
            labelsHash: B256::repeat_byte(vote.0),
            salt: B256::left_padding_from(validator.as_slice()),
        }
    }

    fn commit(&mut self, id: B256, validator: Address, vote: Vote) -> Result<()> {
        let r = self.reveal_call(id, validator, vote);
        let hash = commitment(id, validator, r.score, r.harmful, r.labelsHash, r.salt);
        self.f
            .feedback(
                validator,
                U256::ZERO,
                &IFeedback::rateCall {
                    receiptId: id,
                    commitment: hash,
                },
            )
            .map(drop)
    }

    fn reveal(&mut self, id: B256, validator: Address, vote: Vote) -> Result<()> {
        let call = self.reveal_call(id, validator, vote);
        self.f.feedback(validator, U256::ZERO, &call).map(drop)
    }

    /// `votes[i]` by `account(i + 1)`: committed, revealed when asked, and finalized.
    fn round(&mut self, reward: U256, votes: &[Vote]) -> B256 {
        let id = self.receipt(reward);
        let voters = || {
            votes
                .iter()
                .enumerate()
                .map(|(i, &v)| (account(i as u8 + 1), v))
        };
        for (validator, vote) in voters() {
            self.commit(id, validator, vote).unwrap();
        }
        self.f.host.timestamp += DAY;
        for (validator, vote) in voters().filter(|(_, v)| v.2) {
            self.reveal(id, validator, vote).unwrap();
        }
        self.f.host.timestamp += DAY;
        self.finalize(id).unwrap();
        id
    }

    fn finalize(&mut self, id: B256) -> Result<()> {
        self.f
            .feedback(
                account(9),
                U256::ZERO,
                &IFeedback::finalizeCall { receiptId: id },
            )
            .map(drop)
    }

    fn validator(&mut self, n: u8) -> IFeedback::Validator {
        self.f.host.view(
            &Feedback,
            &IFeedback::validatorOfCall {
                validator: account(n),
            },
        )
    }

    fn phase(&mut self, id: B256) -> Phase {
        self.f
            .host
            .view(&Feedback, &IFeedback::receiptCall { receiptId: id })
            .phase
    }
}

#[test]
fn ratings_near_the_weighted_median_share_the_reward_and_outliers_earn_nothing() {
    // Stakes 10, 20, 30 and 15 OPEN; the median by stake is 75, so 70 and 80 are within the
    // tolerance of 10 points and 20 is not.
    let mut p = Panel::new(&[10, 20, 30, 15]);
    let treasury = p.f.host.balance_of(addresses::TREASURY);
    let id = p.round(open(1), &[agree(70), agree(75), agree(80), agree(20)]);
    let each = open(1) / U256::from(3);
    for n in 1..=3 {
        assert_eq!(p.validator(n).rewards, each);
        assert_eq!(p.validator(n).outlierStreak, 0);
    }
    assert_eq!(p.validator(4).rewards, U256::ZERO);
    assert_eq!(p.validator(4).outlierStreak, 1);
    assert_eq!(
        p.f.host.balance_of(addresses::TREASURY) - treasury,
        open(1) - each * U256::from(3),
        "the rounding dust"
    );
    let finalized = &p.f.host.events::<IFeedback::Finalized>()[0];
    assert_eq!(
        (finalized.receiptId, finalized.median, finalized.accepted),
        (id, 75, 3)
    );
    assert_eq!(p.phase(id), Phase::Finalized);
    let scored = p.f.host.events::<IFeedback::RatingScored>();
    let accepted: Vec<u8> = scored
        .iter()
        .filter(|e| e.accepted)
        .map(|e| e.score)
        .collect();
    assert_eq!(accepted, vec![70, 75, 80]);

    let before = p.f.host.balance_of(account(2));
    let paid =
        p.f.feedback(account(2), U256::ZERO, &IFeedback::claimCall {})
            .unwrap();
    assert_eq!(paid, each);
    assert_eq!(p.f.host.balance_of(account(2)) - before, each);
    assert_reverts(
        p.f.feedback(account(2), U256::ZERO, &IFeedback::claimCall {}),
        IFeedback::NothingToClaim {},
    );
    assert_reverts(
        p.finalize(id),
        IFeedback::WrongPhase {
            receiptId: id,
            phase: Phase::Finalized,
        },
    );
}

#[test]
fn ratings_are_committed_then_revealed_in_their_windows() {
    let mut p = Panel::new(&[10, 10]);
    let id = p.receipt(open(1));
    let (a, b) = (account(1), account(2));
    assert_reverts(
        p.commit(id, account(5), agree(50)),
        IFeedback::NotValidator {
            account: account(5),
            stake: U256::ZERO,
            minimum: open(10),
        },
    );
    p.commit(id, a, agree(50)).unwrap();
    assert_reverts(
        p.commit(id, a, agree(60)),
        IFeedback::AlreadyCommitted {
            receiptId: id,
            validator: a,
        },
    );
    assert_reverts(
        p.reveal(id, a, agree(50)),
        IFeedback::WrongPhase {
            receiptId: id,
            phase: Phase::Commit,
        },
    );
    let unknown = B256::repeat_byte(0xee);
    assert_reverts(
        p.commit(unknown, a, agree(50)),
        IFeedback::UnknownReceipt { receiptId: unknown },
    );

    p.f.host.timestamp += DAY;
    assert_reverts(
        p.commit(id, b, agree(50)),
        IFeedback::WrongPhase {
            receiptId: id,
            phase: Phase::Reveal,
        },
    );
    assert_reverts(
        p.reveal(id, b, agree(50)),
        IFeedback::NotCommitted {
            receiptId: id,
            validator: b,
        },
    );
    // Revealing anything but what was committed fails.
    assert_reverts(
        p.reveal(id, a, agree(90)),
        IFeedback::CommitmentMismatch {
            receiptId: id,
            validator: a,
        },
    );
    assert_reverts(
        p.reveal(id, a, agree(101)),
        IFeedback::InvalidScore { score: 101 },
    );
    assert_reverts(
        p.finalize(id),
        IFeedback::WrongPhase {
            receiptId: id,
            phase: Phase::Reveal,
        },
    );
    p.reveal(id, a, agree(50)).unwrap();
    assert_reverts(
        p.reveal(id, a, agree(50)),
        IFeedback::AlreadyRevealed {
            receiptId: id,
            validator: a,
        },
    );
    let rating = p.f.host.view(
        &Feedback,
        &IFeedback::ratingOfCall {
            receiptId: id,
            validator: a,
        },
    );
    assert!(rating.revealed);
    assert_eq!((rating.score, rating.weight), (50, open(10)));

    p.f.host.timestamp += DAY;
    assert_reverts(
        p.reveal(id, a, agree(50)),
        IFeedback::WrongPhase {
            receiptId: id,
            phase: Phase::Finalizable,
        },
    );
    p.finalize(id).unwrap();
    assert_eq!(p.validator(1).rewards, open(1));
}

#[test]
fn repeated_outliers_lose_part_of_their_stake() {
    let mut p = Panel::new(&[10, 10, 10]);
    let reward = open(1);
    let outlier = [agree(80), agree(80), agree(10)];
    let hidden = [agree(80), agree(80), Vote(10, false, false)];
    let agreeing = [agree(80), agree(80), agree(75)];
    // Two outliers, then an accepted rating: the streak starts over.
    for votes in [outlier, outlier, agreeing] {
        p.round(reward, &votes);
    }
    assert_eq!(p.validator(3).outlierStreak, 0);
    assert_eq!(p.validator(3).stake, open(10));
    // An unrevealed rating counts as an outlier too; the third in a row costs 1% of the stake.
    p.round(reward, &outlier);
    p.round(reward, &hidden);
    let treasury = p.f.host.balance_of(addresses::TREASURY);
    p.round(reward, &outlier);
    let v = p.validator(3);
    assert_eq!((v.stake, v.outlierStreak), (milli(9_900), 0));
    assert_eq!(
        p.f.host.balance_of(addresses::TREASURY) - treasury,
        milli(100)
    );
    let slashed = &p.f.host.events::<IFeedback::ValidatorSlashed>()[0];
    assert_eq!(
        (slashed.validator, slashed.amount),
        (account(3), milli(100))
    );
    // Now under the minimum, it may not rate until it tops up.
    let id = p.receipt(reward);
    assert_reverts(
        p.commit(id, account(3), agree(80)),
        IFeedback::NotValidator {
            account: account(3),
            stake: milli(9_900),
            minimum: open(10),
        },
    );
    p.f.feedback(account(3), milli(100), &IFeedback::registerValidatorCall {})
        .unwrap();
    p.commit(id, account(3), agree(80)).unwrap();
}

#[test]
fn the_quality_score_is_a_moving_average_of_medians() {
    let mut p = Panel::new(&[10]);
    let quality = |p: &mut Panel| {
        let q =
            p.f.host
                .view(&Feedback, &IFeedback::qualityOfCall { modelId: MODEL });
        (q.qualityPpm, q.receipts)
    };
    p.round(U256::ZERO, &[agree(80)]);
    assert_eq!(quality(&mut p), (800_000, 1));
    // 80% of the old score and 20% of the new median.
    p.round(U256::ZERO, &[agree(40)]);
    assert_eq!(quality(&mut p), (720_000, 2));
    // A receipt nobody revealed leaves it alone, and its reward goes to the treasury.
    let treasury = p.f.host.balance_of(addresses::TREASURY);
    p.round(open(1), &[Vote(10, false, false)]);
    assert_eq!(quality(&mut p), (720_000, 2));
    assert_eq!(p.f.host.balance_of(addresses::TREASURY) - treasury, open(1));
}

fn proposals(p: &Panel) -> Vec<IGovernor::ProposalCreated> {
    p.f.host.events::<IGovernor::ProposalCreated>()
}

#[test]
fn a_harmful_majority_proposes_one_slash_of_the_model_at_a_time() {
    let mut p = Panel::new(&[30, 20]);
    let harmful = Vote(10, true, true);
    // 20 of 50 OPEN is no majority.
    p.round(U256::ZERO, &[agree(20), harmful]);
    assert!(proposals(&p).is_empty());

    let id = p.round(U256::ZERO, &[harmful, agree(20)]);
    let created = proposals(&p);
    assert_eq!(created.len(), 1);
    let proposal = &created[0];
    assert_eq!(proposal.proposer, addresses::FEEDBACK);
    assert_eq!(proposal.targets, vec![addresses::STAKING]);
    let slash = IStaking::slashCall::abi_decode(&proposal.calldatas[0]).unwrap();
    assert_eq!((slash.modelId, slash.ppm), (MODEL, 100_000));
    let flagged = &p.f.host.events::<IFeedback::HarmfulFlagged>()[0];
    assert_eq!(
        (
            flagged.receiptId,
            flagged.harmfulStake,
            flagged.revealedStake
        ),
        (id, open(30), open(50))
    );
    assert_eq!(flagged.proposalId, proposal.proposalId);
    let state = |p: &mut Panel, id| {
        p.f.host
            .view(&Governor, &IGovernor::stateCall { proposalId: id })
    };
    assert_eq!(state(&mut p, proposal.proposalId), ProposalState::Pending);

    // While it is open, more harmful flags point at it instead of proposing again.
    p.round(U256::ZERO, &[harmful, harmful]);
    assert_eq!(proposals(&p).len(), 1);
    let again = p.f.host.events::<IFeedback::HarmfulFlagged>()[1].proposalId;
    assert_eq!(again, proposal.proposalId);

    // Once it is defeated (nobody voted), the next flag proposes anew.
    p.f.host.timestamp += 16 * DAY;
    assert_eq!(state(&mut p, proposal.proposalId), ProposalState::Defeated);
    p.round(U256::ZERO, &[harmful, agree(20)]);
    assert_eq!(proposals(&p).len(), 2);
}

#[test]
fn validators_exit_after_the_unbonding_period() {
    let mut p = Panel::new(&[]);
    let v = account(1);
    assert_reverts(
        p.f.feedback(v, open(5), &IFeedback::registerValidatorCall {}),
        IFeedback::StakeBelowMinimum {
            stake: open(5),
            minimum: open(10),
        },
    );
    p.f.feedback(v, open(10), &IFeedback::registerValidatorCall {})
        .unwrap();
    p.f.feedback(v, open(5), &IFeedback::registerValidatorCall {})
        .unwrap();
    let exit = |amount| IFeedback::requestExitCall { amount };
    assert_reverts(
        p.f.feedback(v, U256::ZERO, &exit(open(10))),
        IFeedback::StakeBelowMinimum {
            stake: open(5),
            minimum: open(10),
        },
    );
    assert_reverts(
        p.f.feedback(v, U256::ZERO, &exit(open(20))),
        IFeedback::InsufficientStake {
            available: open(15),
            required: open(20),
        },
    );
    p.f.feedback(v, U256::ZERO, &exit(open(15))).unwrap();
    let release = p.f.host.timestamp + 7 * DAY;
    assert_eq!(p.validator(1).releaseAt, release);
    let withdraw = IFeedback::withdrawExitedCall {};
    assert_reverts(
        p.f.feedback(v, U256::ZERO, &withdraw),
        IFeedback::StillExiting {
            releaseAt: release,
            timestamp: p.f.host.timestamp,
        },
    );
    p.f.host.timestamp = release;
    let before = p.f.host.balance_of(v);
    assert_eq!(p.f.feedback(v, U256::ZERO, &withdraw).unwrap(), open(15));
    assert_eq!(p.f.host.balance_of(v) - before, open(15));
    assert_reverts(
        p.f.feedback(v, U256::ZERO, &withdraw),
        IFeedback::NothingExiting {},
    );
}

#[test]
fn only_settlement_records_and_only_governance_sets_parameters() {
    let mut p = Panel::new(&[]);
    let record = IFeedback::recordReceiptCall {
        receiptId: B256::repeat_byte(1),
        modelId: MODEL,
        promptHash: B256::ZERO,
        outputHash: B256::ZERO,
    };
    assert_reverts(
        p.f.feedback(account(1), U256::ZERO, &record),
        IFeedback::NotSettlement {
            account: account(1),
        },
    );
    let id = p.receipt(U256::ZERO);
    assert_reverts(
        p.f.feedback(addresses::SETTLEMENT, U256::ZERO, &record),
        IFeedback::ReceiptExists { receiptId: id },
    );
    let mut params = p.f.host.view(&Feedback, &IFeedback::paramsCall {});
    params.commitWindow = 60;
    let set = |params| IFeedback::setParamsCall { params };
    assert_reverts(
        p.f.feedback(account(1), U256::ZERO, &set(params.clone())),
        IFeedback::NotGovernance {
            account: account(1),
        },
    );
    let bad = IFeedback::Params {
        feeSharePpm: 1_000_001,
        ..params.clone()
    };
    assert_reverts(
        p.f.feedback(addresses::GOVERNOR, U256::ZERO, &set(bad)),
        IFeedback::InvalidPpm {
            ppm: U256::from(1_000_001),
        },
    );
    p.f.feedback(addresses::GOVERNOR, U256::ZERO, &set(params.clone()))
        .unwrap();
    assert_eq!(p.f.host.view(&Feedback, &IFeedback::paramsCall {}), params);
    // Open receipts keep the windows they were recorded with.
    let receipt =
        p.f.host
            .view(&Feedback, &IFeedback::receiptCall { receiptId: id });
    assert_eq!(receipt.commitEnd, receipt.settledAt + DAY);
}

proptest! {
    /// The weighted median agrees with the plain lower median of every score repeated by its
    /// weight.
    #[test]
    fn weighted_median_matches_the_expanded_median(
        ratings in prop::collection::vec((0u8..=100, 0u64..20), 0..12),
    ) {
        let weighted: Vec<(u8, U256)> =
            ratings.iter().map(|&(s, w)| (s, U256::from(w))).collect();
        let mut expanded: Vec<u8> = ratings
            .iter()
            .flat_map(|&(s, w)| std::iter::repeat_n(s, w as usize))
            .collect();
        expanded.sort_unstable();
        let naive = (!expanded.is_empty()).then(|| expanded[expanded.len().div_ceil(2) - 1]);
        prop_assert_eq!(weighted_median(&weighted), naive);
    }
}
