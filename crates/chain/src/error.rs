//! Errors of the durable store: a leaf below the store, which raises them, and the trie and the
//! state, which read through it and pass them on with their sources.

/// A store that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A stored value could not be decoded: the file is corrupt or from another version.
    #[error("corrupt store: {0}")]
    Decode(#[from] alloy_rlp::Error),
    /// A stored value is missing or out of place.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store belongs to another chain.
    #[error("{0}")]
    Mismatch(String),
}

macro_rules! db_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
db_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
