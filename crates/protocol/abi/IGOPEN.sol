// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title GOPEN, governance-staked OPEN (native module at 0x4f4c000000000000000000000000000000000004)
/// @notice An ERC-20 with OpenZeppelin ERC20Votes semantics on a timestamp clock (ERC-6372):
/// deposit() wraps OPEN 1:1, withdraw() unwraps it. Voting power follows delegation only, so
/// an account votes with its own balance after delegating to itself. Checkpoints record votes
/// and the total supply at every second they change, so getPastVotes and getPastTotalSupply
/// are exact for any past timestamp.
interface IGOPEN {
    /// One checkpoint: from timestamp `_key` on, the votes were `_value`.
    struct Checkpoint208 {
        uint48 _key;
        uint208 _value;
    }

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event DelegateChanged(address indexed delegator, address indexed fromDelegate, address indexed toDelegate);
    event DelegateVotesChanged(address indexed delegate, uint256 previousVotes, uint256 newVotes);

    error InvalidCalldata();
    error NotPayable();
    error ZeroAmount();
    error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
    error ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    error ERC20InvalidReceiver(address receiver);
    error ERC20InvalidSpender(address spender);
    error ERC5805FutureLookup(uint256 timepoint, uint48 clock);

    function name() external view returns (string memory);
    function symbol() external view returns (string memory);
    function decimals() external view returns (uint8);
    function totalSupply() external view returns (uint256);
    function balanceOf(address account) external view returns (uint256);
    function transfer(address to, uint256 value) external returns (bool);
    function approve(address spender, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function allowance(address owner, address spender) external view returns (uint256);

    /// @notice Wraps the OPEN sent into as much GOPEN for the caller.
    function deposit() external payable;
    /// @notice Burns GOPEN and sends the caller as much OPEN.
    function withdraw(uint256 amount) external;

    /// @notice Gives the caller's voting power to `delegatee` (the caller itself to vote directly).
    function delegate(address delegatee) external;
    function delegates(address account) external view returns (address);
    function getVotes(address account) external view returns (uint256);
    /// @notice Votes at the end of the second `timepoint`, which must be in the past.
    function getPastVotes(address account, uint256 timepoint) external view returns (uint256);
    function getPastTotalSupply(uint256 timepoint) external view returns (uint256);
    function numCheckpoints(address account) external view returns (uint32);
    function checkpoints(address account, uint32 pos) external view returns (Checkpoint208 memory);
    /// @notice The current timestamp: the clock votes are counted on.
    function clock() external view returns (uint48);
    /// @notice "mode=timestamp".
    function CLOCK_MODE() external view returns (string memory);
}
