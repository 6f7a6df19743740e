//! Which gateways use this database. Each gateway has an id and a row here.
//! On PostgreSQL a gateway renews its row's heartbeat (`seen_ms`) every
//! [`HEARTBEAT_MS`]; a row not renewed for [`STALE_MS`] is a gateway that
//! died, and whoever joins next removes it. SQLite is shared only by
//! processes of one machine (WAL needs shared memory), so there a row is
//! alive while its process is — the gateway checks the pid — and nothing
//! writes heartbeats (a periodic writer would make other connections'
//! read-then-write transactions fail with "database is locked"). On SQLite
//! one gateway may use the database at a time; the rule that enforces it is
//! the gateway's (`aula_gateway::app`), this module only keeps the rows.

use crate::db::{Store, StoreError};
use sqlx::Row;

/// How often a gateway renews its row.
pub const HEARTBEAT_MS: i64 = 2_000;

/// How long a row may go unrenewed before its gateway counts as dead.
pub const STALE_MS: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The address it serves (`host:port`).
    pub address: String,
    pub started_ms: i64,
    pub seen_ms: i64,
}

impl GatewayRow {
    /// Who started first: the earlier start, then the smaller id.
    pub fn precedes(&self, other: &GatewayRow) -> bool {
        (self.started_ms, &self.id) < (other.started_ms, &other.id)
    }
}

const COLUMNS: &str = "id, host, pid, address, started_ms, seen_ms";

fn row(r: &sqlx::any::AnyRow) -> Result<GatewayRow, StoreError> {
    Ok(GatewayRow {
        id: r.try_get(0)?,
        host: r.try_get(1)?,
        pid: r.try_get(2)?,
        address: r.try_get(3)?,
        started_ms: r.try_get(4)?,
        seen_ms: r.try_get(5)?,
    })
}

impl Store {
    /// Add `me`, first removing (on PostgreSQL) the rows of gateways that
    /// stopped renewing theirs; returns the other gateways' rows (on SQLite
    /// all of them: whether their processes run is the caller's question).
    pub async fn join_gateways(&self, me: &GatewayRow) -> Result<Vec<GatewayRow>, StoreError> {
        if self.is_postgres() {
            sqlx::query("DELETE FROM gateways WHERE seen_ms < $1")
                .bind(me.seen_ms - STALE_MS)
                .execute(&self.pool)
                .await?;
        }
        self.gateway_heartbeat(me).await?;
        Ok(self
            .gateways(me.seen_ms)
            .await?
            .into_iter()
            .filter(|g| g.id != me.id)
            .collect())
    }

    /// Renew `me`'s row (or put it back, if another gateway took it for
    /// dead while this one was stalled).
    pub async fn gateway_heartbeat(&self, me: &GatewayRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO gateways ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms"
        ))
        .bind(&me.id)
        .bind(&me.host)
        .bind(me.pid)
        .bind(&me.address)
        .bind(me.started_ms)
        .bind(me.seen_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remove `id`'s row (a gateway stopping cleanly).
    pub async fn leave_gateways(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM gateways WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A gateway is alive at `now_ms` when its row was renewed since this
    /// (on SQLite, where rows are not renewed: every row).
    pub(crate) fn alive_since(&self, now_ms: i64) -> i64 {
        if self.is_postgres() {
            now_ms - STALE_MS
        } else {
            i64::MIN
        }
    }

    /// The gateways alive at `now_ms` (on SQLite: every row), first
    /// started first.
    pub async fn gateways(&self, now_ms: i64) -> Result<Vec<GatewayRow>, StoreError> {
        let since = self.alive_since(now_ms);
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM gateways WHERE seen_ms >= $1 ORDER BY started_ms, id"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gw(id: &str, started_ms: i64, seen_ms: i64) -> GatewayRow {
        GatewayRow {
            id: id.into(),
            host: "box".into(),
            pid: 1,
            address: "127.0.0.1:8080".into(),
            started_ms,
            seen_ms,
        }
    }

    #[tokio::test]
    async fn gateways_join_and_leave_and_sqlite_rows_never_go_stale() {
        let dir = std::env::temp_dir().join(format!("aula-gw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open_in(&dir).await.unwrap();
        let t = 1_000_000;
        assert!(
            store
                .join_gateways(&gw("a", t, t))
                .await
                .unwrap()
                .is_empty()
        );
        // A second one sees the first, even long after its last heartbeat
        // (on SQLite the pid says whether it lives).
        let later = t + 10 * STALE_MS;
        let others = store.join_gateways(&gw("b", later, later)).await.unwrap();
        assert_eq!(others.len(), 1);
        assert!(others[0].precedes(&gw("b", later, later)));
        // Heartbeats keep the start; leaving removes the row.
        store
            .gateway_heartbeat(&gw("a", t, later + 1))
            .await
            .unwrap();
        let all = store.gateways(later).await.unwrap();
        assert_eq!(
            (all[0].id.as_str(), all[0].started_ms, all[0].seen_ms),
            ("a", t, later + 1)
        );
        store.leave_gateways("a").await.unwrap();
        store.leave_gateways("b").await.unwrap();
        assert!(store.gateways(later).await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
