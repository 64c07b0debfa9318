// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger treasury (native module at 0x4f4c000000000000000000000000000000000008)
/// @notice Receives the EIP-1559 base fee of every block, platform fees, slashed stake and
/// rounding dust. Spending it is a governance action.
interface ITreasury {
    /// @notice OPEN sent to the treasury by a call.
    event Deposited(address indexed from, uint256 amount);
    /// @notice OPEN paid out by governance.
    event Spent(address indexed to, uint256 amount, string memo);

    error InvalidCalldata();
    error NotPayable();
    error NotGovernance(address account);
    error InsufficientBalance(uint256 available, uint256 required);
    error TooLong(string field, uint256 max);

    /// @notice The treasury's OPEN balance, in wei.
    function balance() external view returns (uint256);
    /// @notice Pays `amount` to `to` (the Governor, or the genesis admin).
    function spend(address to, uint256 amount, string calldata memo) external;
}
