//! The Governor module's storage.

use crate::storage::{fields, slots};

slots! {
    /// The parameters: six words in `IGovernor.Params` order ([`param`]).
    PARAMS: 6,
    /// Per proposal id, a proposal ([`field`]).
    PROPOSALS,
    /// Per proposal id, per account: whether it voted.
    HAS_VOTED,
    /// Every proposal id, in the order proposed.
    PROPOSAL_IDS,
    /// Per account, the nonce of its signed ballots.
    NONCES,
}

fields! {
    /// The parameters, from [`PARAMS`].
    mod param {
        VOTING_DELAY,
        VOTING_PERIOD,
        THRESHOLD,
        QUORUM_PPM,
        TIMELOCK,
        GRACE,
    }
}

fields! {
    /// Fields of a proposal, from its base slot.
    mod field {
        PROPOSER,
        SNAPSHOT,
        DEADLINE,
        ETA,
        EXECUTED,
        CANCELED,
        /// Against, For, Abstain: three consecutive words.
        VOTES: 3,
        TARGETS,
        VALUES,
        CALLDATAS,
        DESCRIPTION,
        /// The quorum fraction when it was proposed, so later changes do not move its goalposts.
        QUORUM_PPM,
    }
}
