//! Users, their role and groups, and API keys. A key is shown once when it
//! is made and stored only as its SHA-256; lookups compare hashes in
//! constant time.

use crate::db::{Store, StoreError};
use crate::now_ms;
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Student,
    Teacher,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Teacher => "teacher",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "student" => Ok(Role::Student),
            "teacher" => Ok(Role::Teacher),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "`{other}` is not a role; use admin, teacher or student"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub groups: Vec<String>,
}

/// A key as listed (never the secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub user: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// Why a presented key is not accepted. Callers answer every one of these
/// the same way, so nobody learns whether a user or key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    Unknown,
    Expired,
    Revoked,
}

/// User names that belong to Aula's built-in identities (the bearer of the
/// local admin token, and everyone when no authentication is configured):
/// no user, front end or JupyterHub account may take them.
pub const RESERVED_USER_NAMES: [&str; 2] = ["local-admin", "anonymous"];

/// User and group names: letters, digits and `._@-`, 1 to 64 characters;
/// a user's not one of [`RESERVED_USER_NAMES`].
pub fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if what == "user" && RESERVED_USER_NAMES.contains(&name) {
        return Err(StoreError::Invalid(format!(
            "`{name}` is reserved for Aula's built-in identities; use another user name"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "`{name}` is not a valid {what} name: use 1 to 64 letters, digits or . _ @ -"
        )))
    }
}

/// SHA-256 of a key, hex.
pub fn key_hash(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` random letters and digits from the operating system's generator.
pub fn random_string(n: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Does this look like an Aula key (as opposed to, say, a JupyterHub token)?
pub fn is_aula_key(token: &str) -> bool {
    token.starts_with("aula-")
}

impl Store {
    /// Add a user, or with `replace`, set an existing user's role and groups.
    pub async fn put_user(&self, user: &User, replace: bool) -> Result<(), StoreError> {
        check_name("user", &user.name)?;
        for g in &user.groups {
            check_name("group", g)?;
        }
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT name FROM users WHERE name = $1")
            .bind(&user.name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists && !replace {
            return Err(StoreError::Invalid(format!(
                "the user `{}` already exists",
                user.name
            )));
        }
        if exists {
            sqlx::query("UPDATE users SET role = $1 WHERE name = $2")
                .bind(user.role.as_str())
                .bind(&user.name)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM user_groups WHERE user_name = $1")
                .bind(&user.name)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO users (name, role, source, created_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&user.name)
            .bind(user.role.as_str())
            .bind("local")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        let mut groups = user.groups.clone();
        groups.sort();
        groups.dedup();
        for g in &groups {
            sqlx::query("INSERT INTO user_groups (user_name, group_name) VALUES ($1, $2)")
                .bind(&user.name)
                .bind(g)
                .execute(&mut *tx)
                .await?;
        }
        bump_generation(&mut tx, self.is_postgres()).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM api_keys WHERE user_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM user_groups WHERE user_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("there is no user `{name}`")));
        }
        bump_generation(&mut tx, self.is_postgres()).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let Some(row) = sqlx::query("SELECT name, role FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let groups = sqlx::query(
            "SELECT group_name FROM user_groups WHERE user_name = $1 ORDER BY group_name",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(User {
            name: row.try_get(0)?,
            role: parse_role(&row.try_get::<String, _>(1)?)?,
            groups,
        }))
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT name, role FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let memberships = sqlx::query(
            "SELECT user_name, group_name FROM user_groups ORDER BY user_name, group_name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut groups: std::collections::HashMap<String, Vec<String>> = Default::default();
        for m in memberships {
            groups.entry(m.try_get(0)?).or_default().push(m.try_get(1)?);
        }
        rows.iter()
            .map(|r| {
                let name: String = r.try_get(0)?;
                Ok(User {
                    role: parse_role(&r.try_get::<String, _>(1)?)?,
                    groups: groups.remove(&name).unwrap_or_default(),
                    name,
                })
            })
            .collect()
    }

    /// Make a key for `user`; returns its listing and the secret (shown once).
    pub async fn create_key(
        &self,
        user: &str,
        expires_days: Option<f64>,
    ) -> Result<(KeyInfo, String), StoreError> {
        if self.user(user).await?.is_none() {
            return Err(StoreError::NotFound(format!(
                "there is no user `{user}`; add it first with `aula users add {user}`"
            )));
        }
        if let Some(d) = expires_days
            && !(d > 0.0 && d.is_finite())
        {
            return Err(StoreError::Invalid(
                "--expires must be a positive number of days".into(),
            ));
        }
        let secret = format!("aula-{}", random_string(40));
        let now = now_ms();
        let info = KeyInfo {
            id: random_string(10),
            user: user.to_string(),
            created_ms: now,
            expires_ms: expires_days.map(|d| now + (d * 86_400_000.0) as i64),
            revoked_ms: None,
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, user_name, hash, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&info.id)
        .bind(user)
        .bind(key_hash(&secret))
        .bind(now)
        .bind(info.expires_ms)
        .execute(&mut *tx)
        .await?;
        bump_generation(&mut tx, self.is_postgres()).await?;
        tx.commit().await?;
        Ok((info, secret))
    }

    /// Revoke one key by id, or every key of a user; returns how many.
    pub async fn revoke(&self, key_id_or_user: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE api_keys SET revoked_ms = $1 WHERE (id = $2 OR user_name = $3) AND revoked_ms IS NULL",
        )
        .bind(now_ms())
        .bind(key_id_or_user)
        .bind(key_id_or_user)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "no live key has the id `{key_id_or_user}` or belongs to a user of that name"
            )));
        }
        bump_generation(&mut tx, self.is_postgres()).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Revoke one key by its id only; false when no live key has it.
    pub async fn revoke_key(&self, key_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n =
            sqlx::query("UPDATE api_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL")
                .bind(now_ms())
                .bind(key_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if n > 0 {
            bump_generation(&mut tx, self.is_postgres()).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn keys(&self, user: Option<&str>) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_name, created_ms, expires_ms, revoked_ms FROM api_keys \
             WHERE ($1 = '' OR user_name = $2) ORDER BY user_name, created_ms",
        )
        .bind(user.unwrap_or(""))
        .bind(user.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyInfo {
                    id: r.try_get(0)?,
                    user: r.try_get(1)?,
                    created_ms: r.try_get(2)?,
                    expires_ms: r.try_get(3)?,
                    revoked_ms: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// The user a presented key belongs to, or why it is refused.
    pub async fn check_key(
        &self,
        secret: &str,
    ) -> Result<Result<(KeyInfo, User), KeyProblem>, StoreError> {
        let hash = key_hash(secret);
        let Some(r) = sqlx::query(
            "SELECT id, user_name, created_ms, expires_ms, revoked_ms, hash FROM api_keys WHERE hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(Err(KeyProblem::Unknown));
        };
        let stored: String = r.try_get(5)?;
        if !bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
            return Ok(Err(KeyProblem::Unknown));
        }
        let info = KeyInfo {
            id: r.try_get(0)?,
            user: r.try_get(1)?,
            created_ms: r.try_get(2)?,
            expires_ms: r.try_get(3)?,
            revoked_ms: r.try_get(4)?,
        };
        if info.revoked_ms.is_some() {
            return Ok(Err(KeyProblem::Revoked));
        }
        if info.expires_ms.is_some_and(|e| e <= now_ms()) {
            return Ok(Err(KeyProblem::Expired));
        }
        match self.user(&info.user).await? {
            Some(u) => Ok(Ok((info, u))),
            None => Ok(Err(KeyProblem::Unknown)),
        }
    }

    /// Goes up with every change to users, groups or keys, so a running
    /// gateway knows when its cache of them is stale.
    pub async fn auth_generation(&self) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT value FROM meta WHERE key = 'auth_generation'")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get(0)?)
    }
}

/// On PostgreSQL, also tell every gateway listening (delivered at commit).
async fn bump_generation(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    postgres: bool,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'auth_generation'")
        .execute(&mut **tx)
        .await?;
    if postgres {
        sqlx::query(&format!(
            "SELECT pg_notify('{}', '')",
            crate::db::AUTH_CHANNEL
        ))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(crate) fn parse_role(s: &str) -> Result<Role, StoreError> {
    s.parse().map_err(StoreError::Invalid)
}

/// `name,role,groups` lines (groups separated by `;` or spaces); a header
/// line `name,...` is skipped. Returns the users or the first bad line.
pub fn parse_users_csv(text: &str) -> Result<Vec<User>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if i == 0 && fields[0].eq_ignore_ascii_case("name") {
            continue;
        }
        let bad = |m: String| format!("line {}: {m}", i + 1);
        if fields.len() > 3 {
            return Err(bad(
                "expected name,role,groups (groups separated by ; or spaces)".into(),
            ));
        }
        let name = fields[0].trim_matches('"').to_string();
        check_name("user", &name).map_err(|e| bad(e.to_string()))?;
        let role = match fields.get(1).map(|r| r.trim_matches('"')) {
            None | Some("") => Role::Student,
            Some(r) => r.parse().map_err(bad)?,
        };
        let groups: Vec<String> = fields
            .get(2)
            .map(|g| {
                g.trim_matches('"')
                    .split(|c: char| c == ';' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        for g in &groups {
            check_name("group", g).map_err(|e| bad(e.to_string()))?;
        }
        out.push(User { name, role, groups });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_sha256_in_lowercase_hex() {
        // FIPS 180-2's example: existing keys' stored hashes stay valid.
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Issue 30, finding 7: the built-in identities' names are no user's.
    #[test]
    fn built_in_names_are_reserved() {
        for name in RESERVED_USER_NAMES {
            let e = check_name("user", name).unwrap_err().to_string();
            assert!(e.contains("reserved"), "{e}");
            // A group may be called so; only user names are identities.
            assert!(check_name("group", name).is_ok());
        }
        assert!(check_name("user", "local-admins").is_ok());
    }

    #[test]
    fn csv() {
        let u = parse_users_csv(
            "name,role,groups\nada,teacher,cs101;cs102\nbob,,\n\ncy,student,cs101 lab\n",
        )
        .unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].groups, vec!["cs101", "cs102"]);
        assert_eq!(u[1].role, Role::Student);
        assert_eq!(u[2].groups, vec!["cs101", "lab"]);
        assert!(
            parse_users_csv("ada,wizard,x\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse_users_csv("ok,student\nbad name,student\n")
                .unwrap_err()
                .contains("line 2")
        );
    }

    #[test]
    fn hashes_are_stable() {
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
