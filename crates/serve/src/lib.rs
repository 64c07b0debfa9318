//! OpenLoRA: one resident base model serving many LoRA adapters behind an OpenAI-compatible API.
//!
//! - [`adapters`]: the adapters registered under a folder, and a bounded LRU cache of loaded ones;
//! - [`engine`]: continuous batching across requests for different adapters, on one thread that
//!   owns the model;
//! - [`api`]: the HTTP API (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, `/metrics`);
//! - [`hook`]: the seam where a deployment admits and records each completion (the ledger);
//! - [`metrics`]: the counters behind `/metrics`.

pub mod adapters;
pub mod api;
pub mod batch;
pub mod engine;
pub mod hook;
pub mod metrics;
mod openai;

pub use adapters::{AdapterCache, CacheLimits, Registry};
pub use engine::{Engine, EngineConfig, Event, Request, SubmitError};
