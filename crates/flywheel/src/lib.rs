//! The services that run OpenLedger's loop beside the chain, and how they reach it.
//!
//! The services are clients of the chain: they read module state and submit signed
//! transactions, like any wallet. They do it through [`transport::Transport`], which is the
//! node's own JSON-RPC methods called in-process in `openledger dev` (no loopback HTTP, and
//! views straight from the state) and an HTTP JSON-RPC client when they run apart from the node.
//! [`client::Client`] gives them (and the CLI) typed module calls over either.

pub mod client;
pub mod transport;
