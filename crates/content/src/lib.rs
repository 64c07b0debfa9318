//! The content store: where datanet files live off-chain.
//!
//! A contribution's file is split into rows ([`rows`]), each row is hashed, and the rows' Merkle
//! root ([`content_hash`]) is the content hash the Datanets module records. The store keeps the
//! rows under that hash in the node's data directory, so any node holding the file can prove
//! which rows a version covers and the ML services can read them back.
//!
//! Trained adapters are kept beside them by the hash the chain registers ([`adapters`]), so that
//! any node serving a model can install the adapter it was registered with.

pub mod adapters;
mod rows;
mod store;
mod uploads;

pub use adapters::AdapterStore;
pub use rows::{Format, MAX_ROWS, RowError, content_hash, row_hash, row_text, rows};
pub use store::{ContentError, ContentStore, Manifest, RowsPage};
pub use uploads::{PendingUploads, Upload};
