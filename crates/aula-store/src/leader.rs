//! Which gateway schedules: the holder of one PostgreSQL advisory lock.
//!
//! The rules:
//! - The lock is held by a session: a connection kept apart from the pool
//!   ([`Candidate`]). Whoever holds it leads; the others are standbys and
//!   try again at every tick.
//! - A leader that dies (its process ends, its connection closes) loses the
//!   lock at once. A leader cut off from the database loses it when the
//!   server ends its idle session ([`IDLE_SESSION_MS`]: the leader touches
//!   the connection at every tick, so only a leader that stopped does) — a
//!   standby takes over then, and the old leader, failing to touch its
//!   connection, steps down at its next tick.
//! - On SQLite there is one gateway: it always leads.

use crate::db::{Store, StoreError};
use sqlx::{Connection, Row};

/// The advisory lock's key (any constant the database's other users do not use).
pub const LOCK_KEY: i64 = 0x4175_6c61_5363_6864; // "AulaSchd"

/// How long the server keeps a leader's silent session before ending it
/// (and so releasing the lock).
pub const IDLE_SESSION_MS: i64 = 5_000;

/// A gateway's connection for the lock, and whether it holds it.
#[derive(Default)]
pub struct Candidate {
    conn: Option<sqlx::AnyConnection>,
    leads: bool,
}

impl Candidate {
    pub fn leads(&self) -> bool {
        self.leads
    }

    /// Drop the connection (and with it the lock, once the server sees it
    /// close): after an error or a tick that got no answer in time.
    pub fn reset(&mut self) {
        self.conn = None;
        self.leads = false;
    }
}

impl Store {
    /// One tick of the election: keep the lock (touching the session), or
    /// try to take it. Returns whether `c` leads now. An error means the
    /// database could not be reached: `c` does not lead.
    pub async fn lead(&self, c: &mut Candidate) -> Result<bool, StoreError> {
        if !self.is_postgres() {
            c.leads = true;
            return Ok(true);
        }
        let r = self.lead_inner(c).await;
        if r.is_err() {
            c.reset();
        }
        r
    }

    async fn lead_inner(&self, c: &mut Candidate) -> Result<bool, StoreError> {
        if c.conn.is_none() {
            let mut conn = self.pool.acquire().await?.detach();
            sqlx::query(&format!("SET idle_session_timeout = {IDLE_SESSION_MS}"))
                .execute(&mut conn)
                .await?;
            c.conn = Some(conn);
        }
        let Some(conn) = c.conn.as_mut() else {
            return Ok(false);
        };
        if c.leads {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
        } else {
            let r = sqlx::query("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
            c.leads = r.try_get::<bool, _>(0)?;
        }
        Ok(c.leads)
    }

    /// Give the lock up (a gateway stopping cleanly).
    pub async fn resign(&self, c: &mut Candidate) {
        if let Some(conn) = c.conn.take() {
            let _ = conn.close().await;
        }
        c.leads = false;
    }
}
