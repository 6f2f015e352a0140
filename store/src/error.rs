//! The store's errors: who holds a session when a write is refused, and whether a failed call
//! may be retried.

/// Why a store call failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Another node holds the session (or a later claim of this node does): the caller is a stale
    /// owner and must drop the session. Never retried.
    #[error("session is held by {owner} at epoch {epoch}")]
    Fenced { owner: String, epoch: u64 },
    /// The session is not in the store: never claimed, expired or deleted. A write needs a claim
    /// first.
    #[error("session is not in the store")]
    Gone,
    /// The store could not be reached or did not answer (connection, I/O, timeout, busy): the
    /// call may be retried, and its effect is unknown until it succeeds.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something this code cannot read (or a number it cannot represent).
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The store is configured in a way this build cannot use (an unknown URL scheme, a
    /// durable tier under a store that has none): a fix of the configuration, never a retry.
    #[error("store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether repeating the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(what.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::RowNotFound
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            // Connection, I/O, pool, protocol and database errors (busy, serialization failure,
            // an unmigrated schema): the store is not usable right now.
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Unavailable(format!("migration failed: {e}"))
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> StoreError {
        match e.kind() {
            ::redis::ErrorKind::Parse | ::redis::ErrorKind::UnexpectedReturnType => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> StoreError {
        StoreError::Corrupt(format!("record: {e}"))
    }
}
