// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger Governor (native module at 0x4f4c000000000000000000000000000000000005)
/// @notice OpenZeppelin Governor's interface and states, with GovernorSettings,
/// GovernorCountingSimple (Against 0, For 1, Abstain 2; quorum counts For and Abstain),
/// GovernorVotesQuorumFraction (in ppm), GovernorStorage and a built-in timelock. Votes are GOPEN
/// (0x…04) delegated votes at the proposal's snapshot, on a timestamp clock. Each action calls
/// a native module with the Governor as the caller (module parameters, approveModel, slash,
/// treasury spend) or, with target zero, value zero and empty calldata, only signals. Executing
/// runs the actions in order; if one fails the whole execution reverts and the proposal stays
/// Queued. A queued proposal expires gracePeriod() seconds after it became executable.
interface IGovernor {
    /// A proposal's state, as OpenZeppelin's Governor numbers them.
    enum ProposalState {
        /// Created; voting has not started (votingDelay).
        Pending,
        /// Voting is open.
        Active,
        /// Canceled by its proposer before voting started.
        Canceled,
        /// Voting ended without quorum (For and Abstain) or without more For than Against.
        Defeated,
        /// Voting ended with quorum and more For than Against: it may be queued.
        Succeeded,
        /// Queued in the timelock, executable after timelockDelay.
        Queued,
        /// Queued but not executed within gracePeriod.
        Expired,
        /// Executed.
        Executed
    }

    /// The EIP-712 message castVoteBySig verifies (domain: name(), version(), chain id, this address).
    struct Ballot {
        uint256 proposalId;
        uint8 support;
        address voter;
        uint256 nonce;
    }

    event ProposalCreated(
        uint256 proposalId,
        address proposer,
        address[] targets,
        uint256[] values,
        string[] signatures,
        bytes[] calldatas,
        uint256 voteStart,
        uint256 voteEnd,
        string description
    );
    event ProposalQueued(uint256 proposalId, uint256 etaSeconds);
    event ProposalExecuted(uint256 proposalId);
    event ProposalCanceled(uint256 proposalId);
    event VoteCast(address indexed voter, uint256 proposalId, uint8 support, uint256 weight, string reason);
    event VotingDelaySet(uint256 oldVotingDelay, uint256 newVotingDelay);
    event VotingPeriodSet(uint256 oldVotingPeriod, uint256 newVotingPeriod);
    event ProposalThresholdSet(uint256 oldProposalThreshold, uint256 newProposalThreshold);
    event QuorumNumeratorUpdated(uint256 oldQuorumNumerator, uint256 newQuorumNumerator);
    event TimelockDelaySet(uint256 oldDelay, uint256 newDelay);
    event GracePeriodSet(uint256 oldGracePeriod, uint256 newGracePeriod);

    error InvalidCalldata();
    error NotPayable();
    error GovernorInvalidProposalLength(uint256 targets, uint256 calldatas, uint256 values);
    error GovernorInvalidTarget(address target);
    error GovernorAlreadyCastVote(address voter);
    error GovernorOnlyExecutor(address account);
    error GovernorOnlyProposer(address account);
    error GovernorNonexistentProposal(uint256 proposalId);
    /// expectedStates is a bitmap: bit n set for ProposalState n.
    error GovernorUnexpectedProposalState(uint256 proposalId, ProposalState current, bytes32 expectedStates);
    error GovernorInsufficientProposerVotes(address proposer, uint256 votes, uint256 threshold);
    error GovernorInvalidVoteType();
    error GovernorInvalidSignature(address voter);
    error GovernorNotReady(uint256 proposalId, uint256 etaSeconds);
    error GovernorInvalidVotingPeriod(uint256 votingPeriod);
    error GovernorInvalidQuorumFraction(uint256 quorumNumerator, uint256 quorumDenominator);
    error TooLong(string field, uint256 max);

    function name() external view returns (string memory);
    function version() external view returns (string memory);
    function COUNTING_MODE() external pure returns (string memory);
    function token() external view returns (address);
    function clock() external view returns (uint48);
    function CLOCK_MODE() external view returns (string memory);

    function hashProposal(
        address[] calldata targets,
        uint256[] calldata values,
        bytes[] calldata calldatas,
        bytes32 descriptionHash
    ) external pure returns (uint256);

    /// @notice Proposes actions; the caller needs proposalThreshold() votes one second ago
    /// (the Feedback module, proposing a slash for harm its validators found, needs none).
    function propose(
        address[] calldata targets,
        uint256[] calldata values,
        bytes[] calldata calldatas,
        string calldata description
    ) external returns (uint256 proposalId);

    /// @notice Queues a Succeeded proposal; it may execute timelockDelay() seconds later.
    function queue(
        address[] calldata targets,
        uint256[] calldata values,
        bytes[] calldata calldatas,
        bytes32 descriptionHash
    ) external returns (uint256 proposalId);

    /// @notice Runs a Queued proposal's actions once its timelock has passed (anyone may).
    function execute(
        address[] calldata targets,
        uint256[] calldata values,
        bytes[] calldata calldatas,
        bytes32 descriptionHash
    ) external returns (uint256 proposalId);

    /// @notice Cancels a proposal that is still Pending (its proposer only).
    function cancel(
        address[] calldata targets,
        uint256[] calldata values,
        bytes[] calldata calldatas,
        bytes32 descriptionHash
    ) external returns (uint256 proposalId);

    function state(uint256 proposalId) external view returns (ProposalState);
    function proposalSnapshot(uint256 proposalId) external view returns (uint256);
    function proposalDeadline(uint256 proposalId) external view returns (uint256);
    function proposalProposer(uint256 proposalId) external view returns (address);
    function proposalEta(uint256 proposalId) external view returns (uint256);
    function proposalNeedsQueuing(uint256 proposalId) external view returns (bool);
    function proposalVotes(uint256 proposalId)
        external
        view
        returns (uint256 againstVotes, uint256 forVotes, uint256 abstainVotes);
    function hasVoted(uint256 proposalId, address account) external view returns (bool);

    function castVote(uint256 proposalId, uint8 support) external returns (uint256 weight);
    function castVoteWithReason(uint256 proposalId, uint8 support, string calldata reason)
        external
        returns (uint256 weight);
    /// @notice Casts `voter`'s vote from its EIP-712 Ballot signature (65 bytes r, s, v).
    function castVoteBySig(uint256 proposalId, uint8 support, address voter, bytes calldata signature)
        external
        returns (uint256 weight);
    function nonces(address owner) external view returns (uint256);

    function votingDelay() external view returns (uint256);
    function votingPeriod() external view returns (uint256);
    function proposalThreshold() external view returns (uint256);
    /// @notice Votes needed (For plus Abstain): the GOPEN supply at `timepoint` times the quorum fraction.
    function quorum(uint256 timepoint) external view returns (uint256);
    function quorumNumerator() external view returns (uint256);
    function quorumDenominator() external view returns (uint256);
    function timelockDelay() external view returns (uint256);
    function gracePeriod() external view returns (uint256);
    function getVotes(address account, uint256 timepoint) external view returns (uint256);

    function proposalCount() external view returns (uint256);
    function proposalDetails(uint256 proposalId)
        external
        view
        returns (address[] memory targets, uint256[] memory values, bytes[] memory calldatas, bytes32 descriptionHash);
    function proposalDetailsAt(uint256 index)
        external
        view
        returns (
            uint256 proposalId,
            address[] memory targets,
            uint256[] memory values,
            bytes[] memory calldatas,
            bytes32 descriptionHash
        );

    /// @notice Governance only, as are the other setters.
    function setVotingDelay(uint48 newVotingDelay) external;
    function setVotingPeriod(uint32 newVotingPeriod) external;
    function setProposalThreshold(uint256 newProposalThreshold) external;
    function updateQuorumNumerator(uint256 newQuorumNumerator) external;
    function setTimelockDelay(uint256 newDelay) external;
    function setGracePeriod(uint256 newGracePeriod) external;
}
