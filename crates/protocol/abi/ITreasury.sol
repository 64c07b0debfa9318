// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger treasury (native module at 0x4f4c000000000000000000000000000000000008)
/// @notice Receives the EIP-1559 base fee of every block, platform fees and rounding dust.
interface ITreasury {
    /// @notice OPEN sent to the treasury by a call.
    event Deposited(address indexed from, uint256 amount);

    /// @notice The treasury's OPEN balance, in wei.
    function balance() external view returns (uint256);
}
