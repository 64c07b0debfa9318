//! Settlement: inference fees paid from escrow and split between the protocol, the model's
//! creator, its stakers and the data contributors by attribution weight (DESIGN §4).
//!
//! [`fee`] holds the arithmetic every node must agree on to the wei; the precompile that holds
//! escrows, checks signed orders and accrues rewards builds on it.

pub mod fee;
