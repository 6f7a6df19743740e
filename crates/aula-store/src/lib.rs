//! Aula's state: who may use the box (users, roles, groups, API keys) and
//! what they used (the request ledger). SQLite in the data directory by
//! default, PostgreSQL when a `postgres://` URL is configured; both run the
//! same migrations through sqlx's `Any` driver.
//!
//! [`db`] opens the database; [`identity`] is users, groups and keys;
//! [`ledger`] writes and sums request records; [`gateways`] is which
//! gateways use the database; [`budgets`] is the budgets several gateways share;
//! [`backup`] is a checked copy of the SQLite database.

pub mod backup;
pub mod budgets;
pub mod db;
pub mod files;
pub mod finetune;
pub mod gateways;
pub mod identity;
pub mod leader;
pub mod ledger;
pub mod tables;
pub mod vectors;
pub mod web_sessions;

pub use db::{Store, StoreError};
pub use files::{FileQuery, FileRecord};
pub use finetune::{FineTuneCheckpoint, FineTuneEvent, FineTuneJob, JobStatus};
pub use gateways::GatewayRow;
pub use identity::{KeyInfo, Role, User};
pub use ledger::{Finish, Ledger, Outcome, RequestRecord, UsageBy, UsageRow, new_request_id};
pub use vectors::{ChunkRow, FileCounts, FileStatus, NewChunk, StoreFileRecord, VectorStoreRecord};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
