// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// A counter with events, require-reverts and custom errors: what the end-to-end tests exercise.
contract Counter {
    uint256 public count;

    event Incremented(address indexed by, uint256 newCount);

    error TooLarge(uint256 value, uint256 limit);

    function increment() external {
        count += 1;
        emit Incremented(msg.sender, count);
    }

    function add(uint256 value) external {
        require(value < 1000, "value too large");
        count += value;
        emit Incremented(msg.sender, count);
    }

    function addChecked(uint256 value) external {
        if (value >= 1000) revert TooLarge(value, 1000);
        count += value;
    }
}
