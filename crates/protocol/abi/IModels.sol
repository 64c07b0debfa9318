// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger model registry (native module at 0x4f4c000000000000000000000000000000000002)
/// @notice A model's lifecycle: Proposed -> Approved (by governance) -> Trained (artifact
/// registered) -> Deployed (operator and prices published, the operator's stake in the Staking
/// module at its minimum) -> Retired, or Slashed when a slash leaves the operator's stake under
/// the minimum. Out-of-order transitions revert with WrongStatus.
/// @notice Artifacts are versioned and never replaced: each registerArtifact adds version
/// artifactCount + 1. Before the first deployment the newest version is the model's current one;
/// a Deployed model keeps serving its current version until its creator deploys again (deploy
/// on a Deployed model switches it to the newest version, with the operator and prices given).
/// The Model's adapterHash, datanetVersions and metricsHash are those of its current version.
interface IModels {
    /// A model's place in its lifecycle (see above).
    enum Status {
        /// No model has this id.
        None,
        /// Proposed by its creator, waiting for governance.
        Proposed,
        /// Approved by governance: its artifact may be registered.
        Approved,
        /// Its trained artifact is registered.
        Trained,
        /// Served: operator and prices published.
        Deployed,
        /// Retired by its creator or governance.
        Retired,
        /// Slashed below its minimum operator stake.
        Slashed
    }

    struct Model {
        uint256 id;
        address creator;
        Status status;
        string name;
        string baseModel;
        uint256[] datanetIds;
        bytes32 metadataHash;
        /// Content hash of the LoRA adapter, once trained.
        bytes32 adapterHash;
        /// The version of each of datanetIds the adapter was trained on.
        uint64[] datanetVersions;
        bytes32 metricsHash;
        address operator;
        /// Prices in wei per 1,000 tokens.
        uint256 inputRatePer1k;
        uint256 outputRatePer1k;
        uint64 proposedAt;
        /// The artifact version served (the current one), 0 before the first registration.
        uint64 artifactVersion;
        /// How many artifact versions are registered; the newest is artifactCount.
        uint64 artifactCount;
    }

    /// One registered version of a model's adapter.
    struct Artifact {
        bytes32 adapterHash;
        /// The version of each of the model's datanetIds it was trained on.
        uint64[] datanetVersions;
        bytes32 metricsHash;
        uint64 registeredAt;
        /// When a deploy first made it the served version; 0 while it never was (receipts name
        /// only versions deployed now or before).
        uint64 deployedAt;
    }

    event ModelProposed(uint256 indexed modelId, address indexed creator, string name, string baseModel);
    event ModelApproved(uint256 indexed modelId, address indexed approver);
    event ArtifactRegistered(
        uint256 indexed modelId, bytes32 adapterHash, uint64[] datanetVersions, bytes32 metricsHash, uint64 version
    );
    event ModelDeployed(
        uint256 indexed modelId,
        address indexed operator,
        uint256 inputRatePer1k,
        uint256 outputRatePer1k,
        uint64 artifactVersion
    );
    event ModelRetired(uint256 indexed modelId, address indexed by);
    event ModelSlashed(uint256 indexed modelId);

    error InvalidCalldata();
    error NotPayable();
    error UnknownModel(uint256 modelId);
    error UnknownDatanet(uint256 datanetId);
    error UnknownVersion(uint256 datanetId, uint64 version);
    error NotCreator(uint256 modelId, address account);
    error NotGovernance(address account);
    /// The model's status does not allow the call. `required` is the first status that does: a
    /// call allowed from several (registerArtifact: Approved, Trained or Deployed; deploy: Trained
    /// or Deployed) names the earliest, and Retired and Slashed models allow none of them.
    error WrongStatus(uint256 modelId, Status status, Status required);
    error VersionCountMismatch(uint256 datanets, uint256 versions);
    /// The model was not granted access to the datanet version (IDatanets.requestAccess).
    error NoDataAccess(uint256 modelId, uint256 datanetId, uint64 version);
    error EmptyName();
    error TooLong(string field, uint256 max);
    error NoDatanets();
    error ZeroOperator();
    error InsufficientOperatorStake(uint256 modelId, uint256 stake, uint256 minimum);
    error NotStaking(address account);
    error UnknownArtifact(uint256 modelId, uint64 version);
    error ArtifactAlreadyRegistered(uint256 modelId, bytes32 adapterHash, uint64 version);

    /// @notice Proposes a model fine-tuned from baseModel on the given datanets.
    function proposeModel(
        string calldata name,
        string calldata baseModel,
        uint256[] calldata datanetIds,
        bytes32 metadataHash
    ) external returns (uint256 modelId);

    /// @notice Approves a proposed model (the Governor, or the genesis admin).
    function approveModel(uint256 modelId) external;

    /// @notice Records a trained adapter and the datanet versions it learned from as the model's
    /// next artifact version (creator only; Approved, Trained or Deployed). An adapter identical
    /// to the newest version's reverts with ArtifactAlreadyRegistered.
    function registerArtifact(
        uint256 modelId,
        bytes32 adapterHash,
        uint64[] calldata datanetVersions,
        bytes32 metricsHash
    ) external;

    /// @notice Publishes the operator serving the model and its prices, and makes the newest
    /// artifact version the one served (creator only; Trained, or Deployed to redeploy).
    function deploy(uint256 modelId, address operator, uint256 inputRatePer1k, uint256 outputRatePer1k) external;

    /// @notice Retires a model for good (creator, Governor or admin).
    function retire(uint256 modelId) external;

    /// @notice Marks a deployed model Slashed (the Staking module only, after a slash).
    function markSlashed(uint256 modelId) external;

    function modelCount() external view returns (uint256);
    function getModel(uint256 modelId) external view returns (Model memory);
    /// @notice Artifact `version` (1 to artifactCount) of a model.
    function getArtifact(uint256 modelId, uint64 version) external view returns (Artifact memory);
    function admin() external view returns (address);
}
