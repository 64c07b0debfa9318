// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger validator feedback, RLHF on settled inferences (native module at 0x4f4c000000000000000000000000000000000007)
/// @notice Validators register with at least validatorMinStake and rate settled inferences.
/// Settlement records every settled order here as a receipt (its id is the order's EIP-712
/// struct hash, the `orderHash` of ISettlement.Settled) and funds its feedback reward with
/// feeSharePpm of the platform fee. A rating is committed within commitWindow of the
/// settlement (rate: the commitment is commitmentOf(...)), weighted by the validator's stake
/// at that moment, and revealed in the revealWindow that follows, so that no one can copy the
/// majority. Once both windows have passed anyone may finalize: the median is the
/// stake-weighted (lower) median of the revealed scores; every revealed rating within
/// `tolerance` points of it earns an equal share of the reward (the rounding dust, or all of it
/// when none is accepted, goes to the treasury). Any other rating, unrevealed ones included, is
/// an outlier: outlierLimit outliers in a row cost the validator outlierSlashPpm of its stake,
/// bonded and exiting, to the treasury. The median feeds the model's quality score, an
/// exponential moving average weighting each new median by qualityAlphaPpm. When at least
/// harmfulQuorumPpm of the revealed stake flags an output harmful, this module proposes to the
/// Governor a slash of harmfulSlashPpm of the model's stake, unless a proposal it made for that
/// model is still open. Exits wait the Staking module's unbondingPeriod.
interface IFeedback {
    struct Params {
        uint32 feeSharePpm;
        uint256 validatorMinStake;
        uint64 commitWindow;
        uint64 revealWindow;
        uint8 tolerance;
        uint32 outlierLimit;
        uint32 outlierSlashPpm;
        uint32 qualityAlphaPpm;
        uint32 harmfulQuorumPpm;
        uint32 harmfulSlashPpm;
    }

    /// Where a receipt's rating stands.
    enum Phase {
        /// No receipt has this id.
        Unknown,
        /// Within commitWindow of the settlement: validators commit ratings.
        Commit,
        /// Within the revealWindow that follows: validators reveal them.
        Reveal,
        /// Both windows have passed: anyone may finalize.
        Finalizable,
        /// Finalized: the median is taken and the rewards are paid.
        Finalized
    }

    struct Validator {
        uint256 stake;
        uint256 exiting;
        uint64 releaseAt;
        uint32 outlierStreak;
        uint256 rewards;
    }

    struct Receipt {
        uint256 modelId;
        uint64 settledAt;
        uint64 commitEnd;
        uint64 revealEnd;
        uint256 reward;
        Phase phase;
        uint32 ratings;
        uint8 median;
    }

    struct Rating {
        bytes32 commitment;
        uint256 weight;
        bool revealed;
        uint8 score;
        bool harmful;
        bytes32 labelsHash;
    }

    event ValidatorStaked(address indexed validator, uint256 amount, uint256 stake);
    event ExitRequested(address indexed validator, uint256 amount, uint64 releaseAt);
    event ExitWithdrawn(address indexed validator, uint256 amount);
    event ReceiptRecorded(
        bytes32 indexed receiptId, uint256 indexed modelId, bytes32 promptHash, bytes32 outputHash, uint256 reward
    );
    event RatingCommitted(bytes32 indexed receiptId, address indexed validator, uint256 weight);
    event RatingRevealed(
        bytes32 indexed receiptId, address indexed validator, uint8 score, bool harmful, bytes32 labelsHash
    );
    /// @notice One per rating at finalize. Accepted ratings are the preference dataset.
    event RatingScored(
        bytes32 indexed receiptId,
        address indexed validator,
        bool accepted,
        uint8 score,
        bool harmful,
        bytes32 labelsHash,
        uint256 reward,
        uint32 outlierStreak
    );
    event ValidatorSlashed(address indexed validator, uint256 amount);
    event Finalized(
        bytes32 indexed receiptId, uint256 indexed modelId, uint8 median, uint32 accepted, uint256 rewardEach, uint32 qualityPpm
    );
    /// @notice `proposalId` is the Governor proposal to slash the model: new, or still open from before.
    event HarmfulFlagged(
        bytes32 indexed receiptId, uint256 indexed modelId, uint256 harmfulStake, uint256 revealedStake, uint256 proposalId
    );
    event RewardsClaimed(address indexed validator, uint256 amount);
    event ParamsSet(Params params);

    error InvalidCalldata();
    error NotPayable();
    error ZeroAmount();
    error NotSettlement(address account);
    error NotGovernance(address account);
    error InvalidPpm(uint256 ppm);
    error NotValidator(address account, uint256 stake, uint256 minimum);
    error StakeBelowMinimum(uint256 stake, uint256 minimum);
    error InsufficientStake(uint256 available, uint256 required);
    error NothingExiting();
    error StillExiting(uint64 releaseAt, uint64 timestamp);
    error NothingToClaim();
    error UnknownReceipt(bytes32 receiptId);
    error ReceiptExists(bytes32 receiptId);
    error WrongPhase(bytes32 receiptId, Phase phase);
    error AlreadyCommitted(bytes32 receiptId, address validator);
    error NotCommitted(bytes32 receiptId, address validator);
    error AlreadyRevealed(bytes32 receiptId, address validator);
    error CommitmentMismatch(bytes32 receiptId, address validator);
    error InvalidScore(uint8 score);
    error TooManyRatings(bytes32 receiptId, uint256 max);

    /// @notice Adds the OPEN sent to the caller's validator stake (the first time, at least validatorMinStake).
    function registerValidator() external payable;
    /// @notice Starts the exit of `amount` of stake; what stays must be zero or at least the minimum.
    function requestExit(uint256 amount) external;
    /// @notice Pays out exited stake once its unbonding period has passed.
    function withdrawExited() external returns (uint256 amount);
    /// @notice Commits a rating of a receipt, during its commit window.
    function rate(bytes32 receiptId, bytes32 commitment) external;
    /// @notice Reveals a committed rating (score 0 to 100), during the receipt's reveal window.
    function reveal(bytes32 receiptId, uint8 score, bool harmful, bytes32 labelsHash, bytes32 salt) external;
    /// @notice Scores a receipt's ratings and pays its reward, once its reveal window has passed.
    function finalize(bytes32 receiptId) external;
    /// @notice Pays the caller's feedback rewards.
    function claim() external returns (uint256 amount);

    /// @notice Settlement only: records a settled inference and funds its reward with the OPEN sent.
    function recordReceipt(bytes32 receiptId, uint256 modelId, bytes32 promptHash, bytes32 outputHash)
        external
        payable;
    /// @notice Governance only.
    function setParams(Params calldata params) external;

    function params() external view returns (Params memory);
    function validatorOf(address validator) external view returns (Validator memory);
    function receipt(bytes32 receiptId) external view returns (Receipt memory);
    function ratingOf(bytes32 receiptId, address validator) external view returns (Rating memory);
    /// @notice The validators who rated a receipt, in commit order.
    function ratersOf(bytes32 receiptId) external view returns (address[] memory);
    /// @notice The model's quality score (0 to 1,000,000 for scores 0 to 100) and how many receipts shaped it.
    function qualityOf(uint256 modelId) external view returns (uint32 qualityPpm, uint64 receipts);
    /// @notice keccak256(abi.encode(receiptId, validator, score, harmful, labelsHash, salt)).
    function commitmentOf(
        bytes32 receiptId,
        address validator,
        uint8 score,
        bool harmful,
        bytes32 labelsHash,
        bytes32 salt
    ) external pure returns (bytes32);
}
