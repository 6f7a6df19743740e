//! Signed-in web sessions (the page's; anonymous visitors' sessions stay in
//! each gateway's memory).
//!
//! The rules:
//! * **The database holds no secret a reader could use.** A row is found by
//!   a SHA-256 of the cookie's session id (never the id), and the
//!   credential signed in with (an Aula key or a Hub token) is sealed with
//!   ChaCha20-Poly1305 under a key derived from the session id, which only
//!   the browser holds. A row that does not open is treated as no session.
//! * **Bounds**, applied when a session is added ([`Bounds`]): expired
//!   sessions go; one credential keeps at most `per_credential` (its own
//!   least recently used go first); past `total`, the least recently used
//!   eighth goes. Several gateways adding at once may pass a bound by the
//!   few that raced.
//! * A session ends `idle_ms` after its last use or `max_age_ms` after it
//!   began; its last use is written at most every [`TOUCH_EVERY_MS`].

use crate::db::{Store, StoreError};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// How often a session's last use is written (a page view reads it).
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// The limits on signed-in sessions.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub per_credential: i64,
    pub total: i64,
    pub idle_ms: i64,
    pub max_age_ms: i64,
}

/// A live signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub token: String,
    pub csrf: String,
    pub created_ms: i64,
    pub used_ms: i64,
}

fn digest(domain: &str, secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    h.finalize().into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn id_hash(id: &str) -> String {
    hex(&digest("aula web session id", id))
}

fn credential_hash(token: &str) -> String {
    hex(&digest("aula web session credential", token))
}

fn cipher(id: &str) -> ChaCha20Poly1305 {
    let key = digest("aula web session key", id);
    ChaCha20Poly1305::new(Key::from_slice(&key))
}

/// The credential sealed under the session id: nonce and ciphertext, base64.
fn seal(id: &str, token: &str) -> Result<String, StoreError> {
    let nonce: [u8; 12] = rand::random();
    let mut out = nonce.to_vec();
    out.extend(
        cipher(id)
            .encrypt(Nonce::from_slice(&nonce), token.as_bytes())
            .map_err(|_| StoreError::Invalid("sealing a web session failed".into()))?,
    );
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

fn open(id: &str, sealed: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, ct) = bytes.split_at(12);
    let plain = cipher(id).decrypt(Nonce::from_slice(nonce), ct).ok()?;
    String::from_utf8(plain).ok()
}

impl Store {
    /// Add a signed-in session `id` for `token`, applying the bounds.
    pub async fn add_web_session(
        &self,
        id: &str,
        token: &str,
        csrf: &str,
        now_ms: i64,
        b: Bounds,
    ) -> Result<(), StoreError> {
        let cred = credential_hash(token);
        let sealed = seal(id, token)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM web_sessions WHERE used_ms < $1 OR created_ms < $2")
            .bind(now_ms - b.idle_ms)
            .bind(now_ms - b.max_age_ms)
            .execute(&mut *tx)
            .await?;
        // This credential's own least recently used, past its bound.
        sqlx::query(
            "DELETE FROM web_sessions WHERE id_hash IN (SELECT id_hash FROM web_sessions \
             WHERE credential_hash = $1 ORDER BY used_ms DESC, id_hash LIMIT 1000000 OFFSET $2)",
        )
        .bind(&cred)
        .bind((b.per_credential - 1).max(0))
        .execute(&mut *tx)
        .await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM web_sessions")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if n >= b.total {
            sqlx::query(
                "DELETE FROM web_sessions WHERE id_hash IN (SELECT id_hash FROM web_sessions \
                 ORDER BY used_ms, id_hash LIMIT $1)",
            )
            .bind((b.total / 8).max(1))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, credential_hash, sealed, csrf, created_ms, used_ms) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(id_hash(id))
        .bind(&cred)
        .bind(sealed)
        .bind(csrf)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session `id`, its last use noted; None (and the row gone)
    /// when it has expired or does not open.
    pub async fn web_session(
        &self,
        id: &str,
        now_ms: i64,
        b: Bounds,
    ) -> Result<Option<WebSession>, StoreError> {
        let key = id_hash(id);
        let Some(r) = sqlx::query(
            "SELECT sealed, csrf, created_ms, used_ms FROM web_sessions WHERE id_hash = $1",
        )
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let sealed: String = r.try_get(0)?;
        let (created_ms, used_ms): (i64, i64) = (r.try_get(2)?, r.try_get(3)?);
        let token = open(id, &sealed);
        let alive = now_ms - used_ms <= b.idle_ms && now_ms - created_ms <= b.max_age_ms;
        let Some(token) = token.filter(|_| alive) else {
            self.forget_web_session(id).await?;
            return Ok(None);
        };
        if now_ms - used_ms >= TOUCH_EVERY_MS {
            sqlx::query("UPDATE web_sessions SET used_ms = $1 WHERE id_hash = $2")
                .bind(now_ms)
                .bind(&key)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(WebSession {
            token,
            csrf: r.try_get(1)?,
            created_ms,
            used_ms: used_ms.max(now_ms),
        }))
    }

    pub async fn forget_web_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(id_hash(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Signed-in sessions stored (for tests and the page's own figures).
    pub async fn web_sessions(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM web_sessions")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const B: Bounds = Bounds {
        per_credential: 3,
        total: 16,
        idle_ms: 1_000,
        max_age_ms: 10_000,
    };

    async fn store(tag: &str) -> Store {
        let dir =
            std::env::temp_dir().join(format!("aula-websessions-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store::open_in(&dir).await.unwrap()
    }

    #[test]
    fn the_credential_is_sealed_under_the_session_id() {
        let s = seal("id-1", "aula-secret-key").unwrap();
        assert!(!s.contains("aula-secret-key"));
        assert_eq!(open("id-1", &s).as_deref(), Some("aula-secret-key"));
        assert_eq!(open("id-2", &s), None, "another id does not open it");
        assert_ne!(id_hash("id-1"), id_hash("id-2"));
        assert!(!id_hash("id-1").contains("id-1"));
    }

    #[tokio::test]
    async fn sessions_are_found_expire_and_stay_within_their_bounds() {
        let st = store("bounds").await;
        st.add_web_session("s1", "key-a", "csrf1", 0, B)
            .await
            .unwrap();
        let got = st.web_session("s1", 500, B).await.unwrap().unwrap();
        assert_eq!((got.token.as_str(), got.csrf.as_str()), ("key-a", "csrf1"));
        assert!(st.web_session("nope", 500, B).await.unwrap().is_none());
        // Idle past the bound: gone.
        assert!(st.web_session("s1", 2_000, B).await.unwrap().is_none());
        assert_eq!(st.web_sessions().await.unwrap(), 0);
        // One credential keeps its 3 most recent; others are untouched.
        st.add_web_session("t", "key-teacher", "c", 0, B)
            .await
            .unwrap();
        for i in 0..6 {
            st.add_web_session(&format!("k{i}"), "key-b", "c", i, B)
                .await
                .unwrap();
        }
        assert!(st.web_session("k0", 10, B).await.unwrap().is_none());
        assert!(st.web_session("k5", 10, B).await.unwrap().is_some());
        assert!(st.web_session("t", 10, B).await.unwrap().is_some());
        assert_eq!(st.web_sessions().await.unwrap(), 4);
        // Past the total, the least recently used eighth goes.
        for i in 0..40 {
            st.add_web_session(&format!("u{i}"), &format!("key-{i}"), "c", 20 + i, B)
                .await
                .unwrap();
        }
        assert!(st.web_sessions().await.unwrap() <= B.total);
        st.forget_web_session("u39").await.unwrap();
        assert!(st.web_session("u39", 100, B).await.unwrap().is_none());
    }
}
