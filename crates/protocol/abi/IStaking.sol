// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger staking and slashing (native module at 0x4f4c000000000000000000000000000000000006)
/// @notice Two kinds of stake back a model. Its operator's stake (stakeOperator) is the
/// collateral deploy() and every settlement require: at least minimumStake(modelId), which is
/// operatorMinStake plus operatorVolumePpm of the model's fee volume over the trailing window
/// (estimated from the current and previous window-long periods). Anyone's delegated stake
/// (stake) earns the model's stakers' share of every settled fee, pro rata, through a
/// reward-per-share accumulator; rewards are claimed per model. Unstaking waits
/// unbondingPeriod and stays slashable meanwhile; a new request adds to the pending one and
/// restarts its clock. slash() takes `ppm` of all the model's stake, bonded and unbonding:
/// first from the operator, then from delegators pro rata (their shares keep their number and
/// lose value); reporterSharePpm of it goes to the beneficiary and the rest to the treasury.
/// slashOperator() is the Settlement module's, when a challenge proves a settled attribution
/// wrong: it takes `ppm` of the operator's own stake and sends it to Settlement, which re-pays
/// the contributors from it.
/// Flagged adversarial contributions raise their contributor's penalty score; from
/// penaltyThreshold flags on, penaltyCutPpm of the contributor's rewards go to the treasury.
interface IStaking {
    struct Params {
        uint64 unbondingPeriod;
        uint256 operatorMinStake;
        uint32 operatorVolumePpm;
        uint64 volumeWindow;
        uint32 reporterSharePpm;
        uint32 penaltyThreshold;
        uint32 penaltyCutPpm;
    }

    struct ModelStake {
        address operator;
        uint256 operatorStake;
        uint256 minimumStake;
        uint256 delegated;
        uint256 unbonding;
        uint256 trailingVolume;
    }

    struct Position {
        uint256 bonded;
        uint256 shares;
        uint256 unbonding;
        uint64 releaseAt;
        uint256 pendingRewards;
    }

    event Staked(uint256 indexed modelId, address indexed account, uint256 amount, uint256 shares);
    event OperatorStaked(uint256 indexed modelId, address indexed operator, uint256 amount, uint256 total);
    event UnstakeRequested(uint256 indexed modelId, address indexed account, uint256 amount, uint64 releaseAt);
    event OperatorUnstakeRequested(uint256 indexed modelId, address indexed operator, uint256 amount, uint64 releaseAt);
    event Unbonded(uint256 indexed modelId, address indexed account, uint256 amount);
    event RewardsDistributed(uint256 indexed modelId, uint256 amount, uint256 fee);
    event RewardsClaimed(address indexed account, uint256 amount);
    event Slashed(
        uint256 indexed modelId,
        uint256 ppm,
        uint256 fromOperator,
        uint256 fromDelegators,
        uint256 toBeneficiary,
        uint256 toTreasury,
        address beneficiary,
        string reason
    );
    event ContributionFlagged(
        uint256 indexed contributionId, address indexed contributor, address indexed by, uint32 penaltyScore, string reason
    );
    event ParamsSet(Params params);

    error InvalidCalldata();
    error NotPayable();
    error ZeroAmount();
    error UnknownModel(uint256 modelId);
    error ModelClosed(uint256 modelId);
    error PoolWiped(uint256 modelId);
    error InsufficientStake(uint256 available, uint256 required);
    error NothingUnbonding();
    error StillUnbonding(uint64 releaseAt, uint64 timestamp);
    error NothingToClaim();
    error NotSettlement(address account);
    error NotGovernance(address account);
    error NotCurator(uint256 contributionId, address account);
    error UnknownContribution(uint256 contributionId);
    error AlreadyFlagged(uint256 contributionId);
    error InvalidPpm(uint256 ppm);
    error TooLong(string field, uint256 max);

    /// @notice Delegates the OPEN sent to the model.
    function stake(uint256 modelId) external payable;
    /// @notice Starts unbonding `amount` of the caller's delegated stake.
    function requestUnstake(uint256 modelId, uint256 amount) external;
    /// @notice Adds the OPEN sent to the caller's operator stake for the model.
    function stakeOperator(uint256 modelId) external payable;
    /// @notice Starts unbonding `amount` of the caller's operator stake.
    function requestOperatorUnstake(uint256 modelId, uint256 amount) external;
    /// @notice Pays out the caller's unbonded stake of the model once its period has passed.
    function withdrawUnbonded(uint256 modelId) external returns (uint256 amount);
    /// @notice Pays the caller's staking rewards of the model (and any already credited).
    function claim(uint256 modelId) external returns (uint256 amount);

    /// @notice Settlement only: records a settled fee and shares the OPEN sent among the model's delegators.
    function notifyFee(uint256 modelId, uint256 fee) external payable;
    /// @notice Governance only: slashes `ppm` of the model's stake (see the contract notice).
    function slash(uint256 modelId, uint32 ppm, string calldata reason, address beneficiary) external;
    /// @notice Settlement only: takes `ppm` of the operator's stake and sends it to Settlement.
    function slashOperator(uint256 modelId, uint32 ppm, string calldata reason) external returns (uint256 amount);
    /// @notice Governance or the datanet's owner: marks a contribution adversarial.
    function flagContribution(uint256 contributionId, string calldata reason) external;
    /// @notice Governance only.
    function setParams(Params calldata params) external;

    function params() external view returns (Params memory);
    function modelStake(uint256 modelId) external view returns (ModelStake memory);
    function minimumStake(uint256 modelId) external view returns (uint256);
    function operatorStake(uint256 modelId, address operator) external view returns (uint256);
    function positionOf(uint256 modelId, address account) external view returns (Position memory);
    function pendingRewards(uint256 modelId, address account) external view returns (uint256);
    /// @notice Penalty score and the share of future rewards it cuts, in ppm.
    function penaltyOf(address contributor) external view returns (uint32 score, uint32 cutPpm);
}
