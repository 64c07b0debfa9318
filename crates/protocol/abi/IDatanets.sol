// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger Datanets (native module at 0x4f4c000000000000000000000000000000000001)
/// @notice Curated, domain-specific datasets. Files live in a node's content store; on-chain a
/// contribution records its content hash (the Merkle root of its row hashes), size and status.
/// The owner or its curators approve contributions in rounds; each round cuts a new version whose
/// root is keccak256(previous root . approved content hashes in order), so a version commits to
/// every contribution approved up to it, in order. Publishing and each version pay a size-based
/// fee to the treasury; daily quotas per contributor and per datanet bound contributions.
///
/// Training on a datanet is paid for: the owner sets a price per row (and, for a private
/// datanet, whether access needs its approval); a model's creator buys its model access to a
/// version, which covers every earlier one, paying for the rows it does not have access to yet.
/// The fee goes to the contributors of those rows by their row counts, the owner and the treasury
/// (accessParams shares), as rewards claimable from Settlement. Models.registerArtifact requires
/// access to every datanet version it names; a public datanet priced at zero grants it to all.
interface IDatanets {
    /// Where a contribution stands in its datanet's review.
    enum ContributionStatus {
        /// Waiting for the owner or a curator.
        Pending,
        /// Approved in a round, and so part of the version that round cut.
        Approved,
        /// Rejected, with a reason code in `ContributionsRejected`.
        Rejected
    }

    struct Datanet {
        uint256 id;
        address owner;
        string name;
        string summary;
        bytes32 descriptionHash;
        string[] tags;
        string dataType;
        string licence;
        bool isPublic;
        bool published;
        uint64 versionCount;
        uint64 contributionCount;
        uint64 approvedCount;
        uint64 approvedRows;
        uint64 approvedBytes;
        uint64 createdAt;
    }

    struct Contribution {
        uint256 id;
        uint256 datanetId;
        address contributor;
        bytes32 contentHash;
        uint64 rows;
        uint64 size;
        string licence;
        ContributionStatus status;
        /// The version that approved it (0 while pending or when rejected).
        uint64 version;
        /// The curator's reason code when rejected.
        uint32 reasonCode;
        uint64 submittedAt;
    }

    struct Version {
        uint256 datanetId;
        uint64 number;
        bytes32 root;
        /// Contributions approved in this round, in order.
        uint256[] contributionIds;
        /// Contributions, rows and bytes approved up to and including this version.
        uint64 approvedCount;
        uint64 rows;
        uint64 size;
        uint256 fee;
        uint64 createdAt;
    }

    struct ContributorStats {
        uint64 submitted;
        uint64 approved;
        uint64 rejected;
        /// approved / (approved + rejected), in parts per million; 0 before any decision.
        uint32 acceptancePpm;
    }

    struct Params {
        uint256 feeBase;
        uint256 feePerMib;
        uint64 contributorDailyBytes;
        uint64 contributorDailyFiles;
        uint64 datanetDailyBytes;
        uint64 datanetDailyFiles;
    }

    /// Where a request for access stands.
    enum AccessStatus {
        /// No such request.
        None,
        /// Paid, waiting for the owner of a datanet that requires approval.
        Pending,
        /// Granted (at once, or approved by the owner); the fee was paid out.
        Granted,
        /// Refused by the owner; the fee was refunded.
        Refused
    }

    /// What a datanet's owner asks of a model that trains on it.
    struct AccessTerms {
        /// OPEN (wei) per row of the version paid for.
        uint256 pricePerRow;
        /// Whether the owner approves each request (private datanets only; a public datanet
        /// grants at once).
        bool approvalRequired;
    }

    /// A model's access to a datanet: every version up to `version`.
    struct AccessGrant {
        uint64 version;
        /// What its creator paid for it, in total.
        uint256 paid;
        uint64 grantedAt;
        /// The request waiting for the owner's decision, or 0.
        uint256 pendingRequest;
    }

    struct AccessRequest {
        uint256 id;
        uint256 modelId;
        uint256 datanetId;
        uint64 version;
        address requester;
        /// The fee paid with the request, held until it is decided.
        uint256 fee;
        AccessStatus status;
        uint64 requestedAt;
    }

    /// How access fees are split, and the highest price per row an owner may ask.
    struct AccessParams {
        /// To the treasury, in ppm of each fee.
        uint32 protocolSharePpm;
        /// To the datanet's owner, in ppm; the rest goes to the contributors of the rows paid for.
        uint32 ownerSharePpm;
        uint256 maxPricePerRow;
    }

    /// Which daily quota a contribution would exceed.
    enum Quota {
        /// Bytes one contributor may add in a day (contributorDailyBytes).
        ContributorBytes,
        /// Files one contributor may add in a day (contributorDailyFiles).
        ContributorFiles,
        /// Bytes a datanet may take in a day (datanetDailyBytes).
        DatanetBytes,
        /// Files a datanet may take in a day (datanetDailyFiles).
        DatanetFiles
    }

    event DatanetCreated(uint256 indexed datanetId, address indexed owner, string name, bool isPublic);
    event MetadataUpdated(uint256 indexed datanetId, string name, bytes32 descriptionHash);
    event CuratorSet(uint256 indexed datanetId, address indexed account, bool allowed);
    event ContributorSet(uint256 indexed datanetId, address indexed account, bool allowed);
    event DatanetPublished(uint256 indexed datanetId, uint256 fee);
    event Contributed(
        uint256 indexed datanetId,
        uint256 indexed contributionId,
        address indexed contributor,
        bytes32 contentHash,
        uint64 rows,
        uint64 size
    );
    event VersionCreated(
        uint256 indexed datanetId, uint64 indexed version, bytes32 root, uint256[] contributionIds, uint256 fee
    );
    event ContributionsRejected(uint256 indexed datanetId, uint256[] contributionIds, uint32 reasonCode);
    event ParamsSet(Params params);
    event AccessTermsSet(uint256 indexed datanetId, uint256 pricePerRow, bool approvalRequired);
    event AccessRequested(
        uint256 indexed requestId, uint256 indexed modelId, uint256 indexed datanetId, uint64 version, uint256 fee
    );
    /// Access granted up to `version`; the fee (for the rows from `fromVersion` + 1 on) was split
    /// between the contributors of those rows, the owner and the treasury.
    event AccessGranted(
        uint256 indexed requestId,
        uint256 indexed modelId,
        uint256 indexed datanetId,
        uint64 fromVersion,
        uint64 version,
        uint256 fee,
        uint256 toContributors,
        uint256 toOwner,
        uint256 toTreasury
    );
    event AccessRefused(uint256 indexed requestId, uint256 refunded);
    event AccessParamsSet(AccessParams params);

    error InvalidCalldata();
    error NotPayable();
    error UnknownDatanet(uint256 datanetId);
    error UnknownContribution(uint256 contributionId);
    error UnknownVersion(uint256 datanetId, uint64 version);
    error NotOwner(uint256 datanetId, address account);
    error NotCurator(uint256 datanetId, address account);
    error NotAllowed(uint256 datanetId, address account);
    error NotPublished(uint256 datanetId);
    error AlreadyPublished(uint256 datanetId);
    error NotPending(uint256 contributionId);
    error WrongDatanet(uint256 contributionId, uint256 datanetId);
    error NoContributions();
    error EmptyContribution();
    /// The datanet holds this file already, pending or approved (a rejected one may come again).
    error DuplicateContent(uint256 datanetId, bytes32 contentHash);
    error EmptyName();
    error TooLong(string field, uint256 max);
    error QuotaExceeded(Quota quota, uint256 wouldUse, uint256 limit);
    error InsufficientFee(uint256 required, uint256 paid);
    error NotGovernance(address account);
    error UnknownModel(uint256 modelId);
    error NotModelCreator(uint256 modelId, address account);
    error DatanetNotUsed(uint256 modelId, uint256 datanetId);
    error AccessAlreadyGranted(uint256 modelId, uint256 datanetId, uint64 grantedVersion);
    error AccessPending(uint256 requestId);
    error UnknownAccessRequest(uint256 requestId);
    error RequestNotPending(uint256 requestId, AccessStatus status);
    error PriceAboveMax(uint256 pricePerRow, uint256 max);
    error TooManyContributions(uint256 count, uint256 max);
    error SharesAboveWhole(uint256 sum);

    /// @notice Creates a datanet in draft; the caller owns it.
    function createDatanet(
        string calldata name,
        string calldata summary,
        bytes32 descriptionHash,
        string[] calldata tags,
        string calldata dataType,
        string calldata licence,
        bool isPublic
    ) external returns (uint256 datanetId);

    /// @notice Changes a datanet's descriptive fields (owner only).
    function setMetadata(
        uint256 datanetId,
        string calldata name,
        string calldata summary,
        bytes32 descriptionHash,
        string[] calldata tags,
        string calldata licence
    ) external;

    /// @notice Names or removes a curator, who may approve, reject and allow-list (owner only).
    function setCurator(uint256 datanetId, address account, bool allowed) external;

    /// @notice Allow-lists a contributor of a private datanet (owner or curator).
    function setContributor(uint256 datanetId, address account, bool allowed) external;

    /// @notice Opens the datanet to contributions; pays publishFee(datanetId), excess refunded.
    function publish(uint256 datanetId) external payable;

    /// @notice Submits a file uploaded to the content store, pending curation.
    function contribute(uint256 datanetId, bytes32 contentHash, uint64 rows, uint64 size, string calldata licence)
        external
        returns (uint256 contributionId);

    /// @notice Approves pending contributions in the given order as one new version; pays
    /// versionFee(datanetId, contributionIds), excess refunded (owner or curator).
    function approve(uint256 datanetId, uint256[] calldata contributionIds)
        external
        payable
        returns (uint64 version);

    /// @notice Rejects pending contributions with a reason code (owner or curator).
    function reject(uint256 datanetId, uint256[] calldata contributionIds, uint32 reasonCode) external;

    function datanetCount() external view returns (uint256);
    function getDatanet(uint256 datanetId) external view returns (Datanet memory);
    function getContribution(uint256 contributionId) external view returns (Contribution memory);
    function getVersion(uint256 datanetId, uint64 version) external view returns (Version memory);
    /// @notice Contribution ids submitted to a datanet, oldest first.
    function contributionsOf(uint256 datanetId, uint64 offset, uint64 limit)
        external
        view
        returns (uint256[] memory);
    /// @notice Approved contribution ids of a datanet in version order; version v covers the
    /// first getVersion(datanetId, v).approvedCount of them.
    function approvedContributions(uint256 datanetId, uint64 offset, uint64 limit)
        external
        view
        returns (uint256[] memory);
    /// @notice The contributions of a file, by its content hash, oldest first, in any datanet: a
    /// node serves a file's rows to whoever may read one of them.
    function contributionsWithContent(bytes32 contentHash, uint64 offset, uint64 limit)
        external
        view
        returns (uint256[] memory);
    /// @notice Every account that ever contributed, in order of first contribution (for leaderboards).
    function contributors(uint64 offset, uint64 limit) external view returns (address[] memory);
    function contributorStats(address account) external view returns (ContributorStats memory);
    function isCurator(uint256 datanetId, address account) external view returns (bool);
    function isContributor(uint256 datanetId, address account) external view returns (bool);
    /// @notice What the datanet, and the contributor unless it is the zero address, may still
    /// receive today (UTC): the tightest of the daily quotas that apply.
    function quotaLeft(uint256 datanetId, address contributor)
        external
        view
        returns (uint64 remainingBytes, uint64 remainingFiles);
    function publishFee(uint256 datanetId) external view returns (uint256);
    function versionFee(uint256 datanetId, uint256[] calldata contributionIds) external view returns (uint256);
    function params() external view returns (Params memory);
    /// @notice Governance only: the fees and daily quotas.
    function setParams(Params calldata params) external;

    /// @notice Sets what training on the datanet costs (owner only), up to accessParams().maxPricePerRow.
    function setAccessTerms(uint256 datanetId, uint256 pricePerRow, bool approvalRequired) external;
    function accessTerms(uint256 datanetId) external view returns (AccessTerms memory);
    /// @notice What `modelId`'s creator pays to extend its access to `version`: the price per row
    /// times the rows from its granted version (exclusive) up to `version`.
    function accessFee(uint256 modelId, uint256 datanetId, uint64 version) external view returns (uint256);
    /// @notice Buys model `modelId` access to the datanet up to `version` (the model's creator
    /// only; the model must name the datanet); pays accessFee, excess refunded. Granted at once
    /// unless the datanet is private and requires approval: then held until the owner decides.
    /// At most 1,000 newly covered contributions a request (request a lower version first).
    function requestAccess(uint256 modelId, uint256 datanetId, uint64 version)
        external
        payable
        returns (uint256 requestId);
    /// @notice Grants a pending request and pays its fee out (the datanet's owner only).
    function approveAccess(uint256 requestId) external;
    /// @notice Refuses a pending request and refunds its fee (the datanet's owner only).
    function refuseAccess(uint256 requestId) external;
    function getAccessRequest(uint256 requestId) external view returns (AccessRequest memory);
    /// @notice The access model `modelId` was granted to the datanet.
    function accessOf(uint256 modelId, uint256 datanetId) external view returns (AccessGrant memory);
    /// @notice Whether model `modelId` may train on `version` of the datanet: granted up to it,
    /// or the datanet is public and free.
    function hasAccess(uint256 modelId, uint256 datanetId, uint64 version) external view returns (bool);
    function accessParams() external view returns (AccessParams memory);
    /// @notice Governance only: the access fee's split and the price cap.
    function setAccessParams(AccessParams calldata params) external;
}
