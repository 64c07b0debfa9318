// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger inference settlement (native module at 0x4f4c000000000000000000000000000000000003)
/// @notice Users prepay OPEN into escrow and sign EIP-712 InferenceOrders (domain: name
/// "OpenLedger Settlement", version "1", the chain id, this address). A deployed model's
/// operator settles an order with a receipt; the fee is
/// inputTokens/1000*inputRate + outputTokens/1000*outputRate + platformFee, never above the
/// order's maxFee, and only while the operator's stake in the Staking module is at the model's
/// minimum. The platform fee and rounding dust go to the treasury, less the Feedback module's
/// feeSharePpm of the platform fee, which funds the validators' rewards for rating this
/// inference (the receipt is recorded there under the order hash); the rest is split
/// creator / stakers / contributors (70/10/20 by default), the contributors' pool by attribution
/// weight in ppm (or, with no weights, to the datanet's owner). The stakers' part goes to the
/// Staking module for the model's delegators (to the creator while it has none). A contributor
/// whose penalty score has reached the Staking module's threshold loses its penalty cut to the
/// treasury. Rewards accrue and are paid by claim().
///
/// Every settled receipt is recorded (the hash of its ReceiptRecord, given whole in the
/// ReceiptRecorded event). For challengeWindow() seconds anyone can challenge a receipt settled
/// with span attribution (method 0 or 1) by sending its record, prompt and output texts with a
/// bond of challengeBond(): the node recomputes the span attribution of the output, as the
/// continuation of the prompt, over the receipt's datanet version (deterministic integer
/// arithmetic; gas grows with the texts' length). If the recomputed weights differ from the
/// settled ones, the challenge is upheld: the operator loses challengeSlashPpm() of its stake,
/// from which the receipt's contributor pool is paid again by the recomputed weights, half of
/// the rest rewards the challenger and the other half goes to the treasury; the bond is
/// returned. Otherwise the bond goes to the treasury and the receipt is verified for good.
interface ISettlement {
    /// A model creator's consent to pay `trainer` up to `maxFee` from escrow for training model
    /// `modelId` (EIP-712, signed by `payer`; its nonce is spent like an inference order's).
    struct TrainingOrder {
        address payer;
        address trainer;
        uint256 modelId;
        uint256 maxFee;
        uint256 nonce;
        /// After it, a hold its trainer has not settled can be refunded by the payer.
        uint64 expiry;
    }

    /// Where a training payment stands.
    enum HoldStatus {
        /// No such hold.
        None,
        /// Taken from the payer's escrow, waiting for the training's outcome.
        Held,
        /// Paid to the trainer: the model registered a new artifact after the hold.
        Paid,
        /// Back in the payer's escrow.
        Refunded
    }

    /// A training fee held from escrow (its id is the order's EIP-712 hash).
    struct TrainingHold {
        address payer;
        address trainer;
        uint256 modelId;
        uint256 amount;
        /// The model's artifact count when held: the trainer is paid once it grows.
        uint64 artifactCount;
        uint64 expiry;
        HoldStatus status;
    }

    struct InferenceOrder {
        address user;
        uint256 modelId;
        uint256 maxFee;
        uint256 nonce;
        uint64 expiry;
    }

    struct InferenceReceipt {
        uint64 inputTokens;
        uint64 outputTokens;
        bytes32 promptHash;
        bytes32 outputHash;
        /// The model's artifact version that served it (IModels.getArtifact): one deployed now
        /// or before.
        uint64 artifactVersion;
        /// One of the model's datanets, at the version that artifact was trained on.
        uint256 datanetId;
        uint64 datanetVersion;
        /// The attribution engine: 0 none, 1 span (suffix array), 2 gradient influence.
        uint8 method;
        /// Contributions included in that version, each with its weight in ppm; the weights
        /// sum to 1,000,000, or both arrays are empty.
        uint256[] contributionIds;
        uint32[] weights;
    }

    struct Settlement {
        InferenceOrder order;
        bytes signature;
        InferenceReceipt receipt;
    }

    /// Where a settled receipt stands against challenges.
    enum ReceiptStatus {
        /// No receipt has this id.
        Unknown,
        /// Settled; challengeable while its window is open.
        Settled,
        /// A challenge proved its weights wrong and it was re-settled.
        Corrected,
        /// A challenge confirmed its weights.
        Verified
    }

    /// What a challenge needs of a settled receipt, as its ReceiptRecorded event gives it; only
    /// its hash is stored.
    struct ReceiptRecord {
        uint256 modelId;
        /// The operator that settled it.
        address operator;
        uint256 datanetId;
        uint64 datanetVersion;
        uint8 method;
        bytes32 promptHash;
        bytes32 outputHash;
        /// keccak256(abi.encode(contributionIds, weights)) with the pairs sorted by contribution id.
        bytes32 weightsHash;
        /// The receipt's contributor pool, in wei.
        uint256 pool;
    }

    /// Why a reward accrued to an account (RewardAccrued).
    enum Role {
        /// The model's creator share.
        Creator,
        /// The stakers' share, accrued to the creator while the model has no delegators.
        Stakers,
        /// A contributor's attribution-weighted part of the contributors' pool.
        Contributor,
        /// The contributors' pool, to the datanet's owner when a receipt carries no weights.
        DatanetOwner,
        /// A contributor's part of a training-access fee, by the rows it contributed.
        AccessContributor,
        /// The datanet owner's share of a training-access fee.
        AccessOwner
    }

    /// A reward the Datanets module accrues from an access fee.
    struct Accrual {
        address account;
        Role role;
        uint256 amount;
    }

    event Deposited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);
    event Unlocking(address indexed account, uint256 amount, uint64 releaseAt);
    event TrainingHeld(
        bytes32 indexed holdId, address indexed payer, address indexed trainer, uint256 modelId, uint256 amount
    );
    event TrainingPaid(bytes32 indexed holdId, address indexed trainer, uint256 amount);
    event TrainingRefunded(bytes32 indexed holdId, address indexed payer, uint256 amount);
    event Settled(
        bytes32 indexed orderHash,
        uint256 indexed modelId,
        address indexed user,
        uint256 fee,
        uint64 inputTokens,
        uint64 outputTokens,
        bytes32 promptHash,
        bytes32 outputHash,
        uint256 datanetId,
        uint64 datanetVersion,
        uint8 method,
        uint64 artifactVersion
    );
    event RewardAccrued(address indexed account, uint256 indexed modelId, Role role, uint256 amount);
    event TreasuryPaid(bytes32 indexed orderHash, uint256 amount);
    event Claimed(address indexed account, uint256 amount);
    event RewardCut(address indexed account, uint256 indexed modelId, uint256 amount);
    event ReceiptRecorded(bytes32 indexed receiptId, ReceiptRecord record);
    event Challenged(
        bytes32 indexed receiptId,
        address indexed challenger,
        bool upheld,
        bytes32 settledWeightsHash,
        bytes32 recomputedWeightsHash
    );
    event Resettled(
        bytes32 indexed receiptId, uint256 slashed, uint256 toContributors, uint256 toChallenger, uint256 toTreasury
    );
    event ParamsSet(uint256 platformFee, uint32 creatorShare, uint32 stakersShare, uint32 contributorsShare);

    error InvalidCalldata();
    error NotPayable();
    error ZeroAmount();
    error InsufficientEscrow(uint256 available, uint256 required);
    error NotUnlocked(uint256 unlocked, uint256 required);
    error StillLocked(uint64 releaseAt, uint64 timestamp);
    error NothingToClaim();
    error UnknownModel(uint256 modelId);
    error ModelNotDeployed(uint256 modelId);
    error NotOperator(uint256 modelId, address account);
    error OrderExpired(uint64 expiry, uint64 timestamp);
    error NonceUsed(address user, uint256 nonce);
    error BadSignature();
    error FeeAboveMax(uint256 fee, uint256 maxFee);
    error FeeOverflow();
    error DatanetNotUsed(uint256 modelId, uint256 datanetId);
    error ArtifactNotDeployed(uint256 modelId, uint64 artifactVersion, uint64 currentVersion);
    error VersionNotTrained(uint256 datanetId, uint64 version, uint64 trainedVersion);
    error ContributionNotInVersion(uint256 contributionId, uint256 datanetId, uint64 version);
    error WeightsMismatch(uint256 contributions, uint256 weights);
    error WeightsDoNotSum(uint256 sum);
    error EmptyBatch();
    error StakeBelowMinimum(uint256 modelId, uint256 stake, uint256 minimum);
    error NotGovernance(address account);
    error SharesDoNotSum(uint256 sum);
    error UnknownReceipt(bytes32 receiptId);
    error RecordMismatch(bytes32 receiptId);
    error AlreadyResolved(bytes32 receiptId, ReceiptStatus status);
    error ChallengeWindowClosed(bytes32 receiptId, uint64 deadline);
    error BondTooLow(uint256 bond, uint256 required);
    error TextMismatch(bytes32 promptHash, bytes32 outputHash);
    error TextTooLong(uint256 length, uint256 max);
    error NotSpanAttributed(uint8 method);
    error AttributionUnavailable(uint256 datanetId, uint64 version, string reason);
    error NotDatanets(address caller);
    error NotTrainer(bytes32 holdId, address account);
    error HoldNotOpen(bytes32 holdId, HoldStatus status);
    error NothingTrained(bytes32 holdId, uint256 modelId);
    error HoldNotExpired(bytes32 holdId, uint64 expiry);
    error AccrualMismatch(uint256 sum, uint256 value);

    /// @notice Adds the OPEN sent to the caller's escrow.
    function deposit() external payable;
    /// @notice Starts taking `amount` of the caller's escrow out: it can be withdrawn once the
    /// withdrawal delay has passed, and until then it still pays for completions already served,
    /// so an operator that served one against it is paid. Replaces any earlier unlock and starts
    /// the delay again; 0 cancels.
    function unlock(uint256 amount) external;
    /// @notice Takes unlocked OPEN out of the caller's escrow, once the withdrawal delay has passed.
    function withdraw(uint256 amount) external;
    /// @notice An account's escrow balance (unlocking OPEN included, until withdrawn).
    function balanceOf(address account) external view returns (uint256);
    /// @notice An account's escrow: its balance, how much of it is unlocking, and from when that
    /// can be withdrawn. New completions may count on `balance - unlocking` only.
    function escrowOf(address account) external view returns (uint256 balance, uint256 unlocking, uint64 releaseAt);
    /// @notice Seconds between an unlock and the withdrawal it allows.
    function withdrawalDelay() external view returns (uint64);

    /// @notice Charges a signed order for one inference and accrues the rewards (the model's operator only).
    function settle(InferenceOrder calldata order, bytes calldata signature, InferenceReceipt calldata receipt)
        external
        returns (uint256 fee);
    /// @notice Settles many receipts in one transaction, all or none.
    function settleBatch(Settlement[] calldata settlements) external returns (uint256 totalFee);

    /// @notice Challenges a settled receipt's span attribution, with a bond (see the notice above).
    function challenge(
        bytes32 receiptId,
        ReceiptRecord calldata record,
        string calldata prompt,
        string calldata output
    ) external payable returns (bool upheld);
    /// @notice A receipt's status, when it was settled and the hash of its ReceiptRecord.
    function receiptStatus(bytes32 receiptId)
        external
        view
        returns (ReceiptStatus status, uint64 settledAt, bytes32 recordHash);
    function challengeBond() external view returns (uint256);
    function challengeWindow() external view returns (uint64);
    function challengeSlashPpm() external view returns (uint32);

    /// @notice The Datanets module only: accrues a training-access fee's rewards (the value sent)
    /// for model `modelId`, contributors' parts less their penalty cuts, as RewardAccrued.
    function accrueAccess(uint256 modelId, Accrual[] calldata accruals) external payable;

    /// @notice The trainer named in a signed training order only: takes `amount` (at most the
    /// order's maxFee) from the payer's escrow, less what is unlocking, into a hold for the
    /// training; returns the hold's id, the order's hash.
    function holdTraining(TrainingOrder calldata order, bytes calldata signature, uint256 amount)
        external
        returns (bytes32 holdId);
    /// @notice The hold's trainer only, once its model registered a new artifact since the hold
    /// that paid no other hold: pays the held fee to the trainer.
    function payTraining(bytes32 holdId) external;
    /// @notice Returns a held fee to the payer's escrow: by its trainer at any time (the training
    /// failed or was cancelled), by the payer once the order has expired.
    function refundTraining(bytes32 holdId) external;
    function trainingHold(bytes32 holdId) external view returns (TrainingHold memory);
    /// @notice The EIP-712 digest a payer signs for a training order.
    function trainingOrderDigest(TrainingOrder calldata order) external view returns (bytes32);

    /// @notice Pays the caller's accrued rewards.
    function claim() external returns (uint256 amount);
    /// @notice An account's claimable rewards.
    function rewards(address account) external view returns (uint256);

    function nonceUsed(address user, uint256 nonce) external view returns (bool);
    /// @notice The EIP-712 digest a user signs for an order.
    function orderDigest(InferenceOrder calldata order) external view returns (bytes32);
    function domainSeparator() external view returns (bytes32);
    /// @notice The fee a deployed model charges for the given token counts, platform fee included.
    function quote(uint256 modelId, uint64 inputTokens, uint64 outputTokens) external view returns (uint256);
    function platformFee() external view returns (uint256);
    /// @notice The split of a fee after the platform fee, in ppm.
    function shares() external view returns (uint32 creator, uint32 stakers, uint32 contributors);
    /// @notice Governance only: the platform fee and the split of the rest (ppm summing to 1,000,000).
    function setParams(uint256 platformFee, uint32 creatorShare, uint32 stakersShare, uint32 contributorsShare)
        external;
}
