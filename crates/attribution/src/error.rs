//! What can go wrong building, opening or querying an attribution index.

use std::path::{Path, PathBuf};

/// An attribution error; every variant names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An index file is damaged, truncated or of another format.
    #[error("{path}: corrupt index: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The query was tokenized with a tokenizer other than the index's.
    #[error(
        "the index was built with tokenizer {index} but the query uses tokenizer {query}; \
         tokenize with the index's tokenizer.json"
    )]
    TokenizerMismatch {
        /// Fingerprint recorded in the index.
        index: String,
        /// Fingerprint of the query's tokenizer.
        query: String,
    },
    /// Bad input to a build or a query.
    #[error("invalid input: {0}")]
    Input(String),
}

impl AttributionError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A corrupt-index error on `path`.
    pub fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, AttributionError>;
