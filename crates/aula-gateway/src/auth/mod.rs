//! Authentication, three ways: Aula API keys, JupyterHub tokens (resolved
//! through the Hub's REST API), and trusted front ends acting for their
//! users. Every failure of a credential reads the same to the client
//! ("invalid or missing credentials"), so nobody learns whether a user or
//! key exists, and no token ever goes into a log line or an error body.
//!
//! Rules enforced here:
//! - A key is refused once it expires, also while it is cached: each cached
//!   key carries its expiry, checked on every use.
//! - **A front end's users are its own**: the user `ada` of the front end
//!   `webui` is `webui/ada` in Aula (a name no Aula user can have), a
//!   student with the front end's groups — so a student who signs up in a
//!   web UI under a classmate's address gets a new, empty account, never
//!   the classmate's files, models or quota (Open WebUI does not verify
//!   e-mail). Only a front end an admin lists in `[auth] verified` (one
//!   that checks who its users are: single sign-on) acts for the Aula user
//!   of the same name, and then only for users whose role is at most the
//!   front end's own (its key's user's role); others are refused (403).
//! - A user or group name a front end sends must already be a valid Aula
//!   name (1 to 64 letters, digits or `._@-`); anything else is refused
//!   (400), never rewritten, so `prof+x@uni.edu` cannot pass for
//!   `prof_x@uni.edu`.
//! - With `jwt_audience` / `jwt_issuer` configured, a front end's signed
//!   user token must name them (`aud`, `iss`).
//! - JupyterHub is asked about a token at most once at a time (concurrent
//!   requests with the same unknown token wait for one answer), by at most
//!   `HUB_ASKING` requests at once; answers are cached for `cache_seconds`,
//!   accepted and refused tokens apart and each bounded, so a flood of
//!   made-up tokens neither floods the Hub nor pushes out working users.
//! - The local admin token (a file in the data directory, readable only by
//!   the service's own account) makes its bearer an admin: it grants
//!   nothing that account cannot already do with `aula keys create`, and it
//!   is how `aula ps|load|unload` administer a gateway that has no users.

use crate::identity::{Identity, Via};
use aula_fleet::backend::HttpClient;
use aula_protocol::ApiError;
use aula_store::identity::{KeyProblem, check_name, is_aula_key, key_hash};
use aula_store::{Role, Store, now_ms};
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod hub;

/// How a running gateway learns about new and revoked keys: it re-reads the
/// database's change counter at most this often.
const KEY_REFRESH: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 100_000;
/// Tokens the Hub refused, remembered for the cache time: at most this many.
const HUB_REFUSED_MAX: u64 = 10_000;
/// Questions to the Hub in flight at once; more wait (within the Hub's timeout).
pub const HUB_ASKING: usize = 16;
/// The largest answer read from the Hub.
const HUB_ANSWER_MAX: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The Hub's base URL, e.g. `http://127.0.0.1:8081` (its API is under /hub/api).
    pub url: String,
    /// Aula's service token at the Hub.
    pub api_token: String,
    /// Aula's service name at the Hub: tokens need `access:services!service=NAME`.
    pub service: String,
    pub cache: Duration,
    pub timeout: Duration,
}

/// What a front end's signed user tokens (HS256 JWTs) must satisfy.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub secret: String,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
}

/// How a gateway authenticates (from its config and command line).
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub hub: Option<HubConfig>,
    /// Aula users whose keys may act for the users of a front end.
    pub trusted: Vec<String>,
    /// Of those, the front ends whose users are Aula's users of the same
    /// name (the rest have their own namespace, `FRONTEND/NAME`).
    pub verified: Vec<String>,
    pub jwt: Option<JwtConfig>,
    /// With no users and no Hub, requests are served as `anonymous` — only
    /// where that was allowed (loopback, or --insecure-no-auth).
    pub allow_open: bool,
    /// The local admin token (see the module doc), if the gateway has one.
    pub local_admin: Option<String>,
}

/// The authenticated caller of a route, as an axum extractor: a handler
/// names `Caller(id): Caller` instead of reading headers. It runs before
/// the body is read (a body is read only for a known caller), and any state
/// that can lend its [`Authenticator`] ([`HasAuth`]) can use it.
pub struct Caller(pub Identity);

/// A router state that holds the [`Authenticator`].
pub trait HasAuth {
    fn authenticator(&self) -> &Authenticator;
}

impl<S: HasAuth + Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &S,
    ) -> Result<Self, ApiError> {
        st.authenticator()
            .authenticate(&parts.headers)
            .await
            .inspect_err(crate::metrics::auth_refused)
            .map(Caller)
    }
}

pub struct Authenticator {
    store: Store,
    hub: Option<HubConfig>,
    client: HttpClient,
    trusted: Vec<String>,
    verified: Vec<String>,
    jwt: Option<JwtConfig>,
    allow_open: bool,
    /// SHA-256 of the local admin token.
    local_admin: Option<String>,
    open: AtomicBool,
    keys: Mutex<KeyCache>,
    hub_answers: HubAnswers,
}

/// What the Hub said of tokens (keyed by the token's SHA-256).
struct HubAnswers {
    accepted: moka::future::Cache<String, Identity>,
    refused: moka::future::Cache<String, ()>,
    asking: tokio::sync::Semaphore,
}

/// Why asking the Hub gave no identity.
#[derive(Debug)]
enum HubRefusal {
    Refused,
    Unavailable(ApiError),
}

struct KeyCache {
    generation: i64,
    checked: Option<Instant>,
    entries: HashMap<String, Result<CachedKey, KeyProblem>>,
}

/// A key found good: whose it is, and when it expires (Unix ms), checked
/// again on every use of the cached entry.
#[derive(Clone)]
struct CachedKey {
    identity: Identity,
    expires_ms: Option<i64>,
}

const REFUSED: &str = "invalid or missing credentials: send `Authorization: Bearer KEY` with an Aula API key or your JupyterHub token";

fn refused() -> ApiError {
    ApiError::Unauthorized(REFUSED.into())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A user or group name from a front end, as it is: trimmed, and refused
/// (400) unless it is a valid Aula name. Never rewritten: a rewritten name
/// (`prof+x` as `prof_x`) could be somebody else's.
fn front_end_name(what: &str, source: &str, raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    check_name(what, name).map_err(|e| {
        ApiError::invalid(format!(
            "the front end sent the {what} name `{name:.64}` in {source}: {e} (names are not \
             rewritten, so that one cannot pass for another)"
        ))
    })?;
    Ok(name.to_string())
}

/// The user a front end says it acts for (Open WebUI's forwarded headers):
/// the first of these headers that is present decides.
fn front_end_user(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    for h in [
        "x-openwebui-user-email",
        "x-openwebui-user-id",
        "x-openwebui-user-name",
    ] {
        let Some(v) = headers.get(h) else { continue };
        let raw = v.to_str().unwrap_or("\u{fffd}");
        if raw.trim().is_empty() {
            continue;
        }
        return front_end_name("user", &format!("`{h}`"), raw).map(Some);
    }
    Ok(None)
}

impl Authenticator {
    pub async fn new(
        store: Store,
        settings: AuthSettings,
        client: HttpClient,
    ) -> Result<Authenticator, aula_store::StoreError> {
        let ttl = settings
            .hub
            .as_ref()
            .map(|h| h.cache)
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_millis(1));
        let a = Authenticator {
            store,
            hub: settings.hub,
            client,
            trusted: settings.trusted,
            verified: settings.verified,
            jwt: settings.jwt,
            allow_open: settings.allow_open,
            local_admin: settings.local_admin.as_deref().map(key_hash),
            open: AtomicBool::new(false),
            keys: Mutex::new(KeyCache {
                generation: -1,
                checked: None,
                entries: HashMap::new(),
            }),
            hub_answers: HubAnswers {
                accepted: moka::future::Cache::builder()
                    .max_capacity(CACHE_MAX as u64)
                    .time_to_live(ttl)
                    .build(),
                refused: moka::future::Cache::builder()
                    .max_capacity(HUB_REFUSED_MAX)
                    .time_to_live(ttl)
                    .build(),
                asking: tokio::sync::Semaphore::new(HUB_ASKING),
            },
        };
        a.refresh(true).await?;
        Ok(a)
    }

    /// Is any authentication configured (users in the database, or a Hub)?
    pub fn auth_configured(&self) -> bool {
        !self.open.load(Ordering::Relaxed)
    }

    /// Users, groups or keys changed (another gateway or the CLI said so):
    /// the next request reads the change counter again instead of waiting
    /// for [`KEY_REFRESH`] to pass.
    pub fn changed_elsewhere(&self) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).checked = None;
    }

    /// Drop cached keys when users or keys changed in the database.
    async fn refresh(&self, force: bool) -> Result<(), aula_store::StoreError> {
        {
            let k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if !force && k.checked.is_some_and(|t| t.elapsed() < KEY_REFRESH) {
                return Ok(());
            }
        }
        let generation = aula_store::db::within(self.store.auth_generation()).await?;
        let changed = {
            let mut k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            k.checked = Some(Instant::now());
            let changed = k.generation != generation;
            if changed {
                k.generation = generation;
                k.entries.clear();
            }
            changed
        };
        if changed {
            let no_users = aula_store::db::within(self.store.users()).await?.is_empty();
            self.open
                .store(no_users && self.hub.is_none(), Ordering::Relaxed);
        }
        Ok(())
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        if let Err(e) = self.refresh(false).await {
            tracing::error!("cannot read users and keys: {e}");
            return Err(ApiError::StateUnavailable(
                "Aula cannot read its user database right now; try again shortly".into(),
            ));
        }
        let Some(token) = bearer(headers) else {
            if self.open.load(Ordering::Relaxed) {
                return if self.allow_open {
                    Ok(Identity::anonymous())
                } else {
                    Err(refused())
                };
            }
            return Err(refused());
        };
        // Only tokens of the local admin token's shape are hashed for it:
        // every other request keeps its one hash (in `check_key`).
        if let Some(local) = &self.local_admin
            && token.starts_with(crate::home::LOCAL_ADMIN_PREFIX)
            && key_hash(token) == *local
        {
            return Ok(Identity::local_admin());
        }
        if is_aula_key(token) {
            let id = self.check_key(token).await?;
            if self.trusted.contains(&id.name) {
                if let Some(token) = headers.get("x-aula-user-token") {
                    let (user, groups) = self.check_user_token(token.to_str().unwrap_or(""))?;
                    let mut acting = self.acting_for(&id, &user).await?;
                    for g in groups {
                        if !acting.groups.contains(&g) {
                            acting.groups.push(g);
                        }
                    }
                    return Ok(acting);
                }
                if let Some(user) = front_end_user(headers)? {
                    // With a jwt_secret configured, only the signed token
                    // names a user: plain headers would make it pointless.
                    if self.jwt.is_some() {
                        tracing::warn!(
                            "the front end `{}` sent X-OpenWebUI-* headers, but this gateway takes users only from a signed X-Aula-User-Token",
                            id.name
                        );
                        return Err(ApiError::Unauthorized(
                            "this gateway takes a front end's users only as a signed X-Aula-User-Token".into(),
                        ));
                    }
                    return self.acting_for(&id, &user).await;
                }
            }
            return Ok(id);
        }
        if self.hub.is_some() {
            return self.check_hub(token).await;
        }
        if self.open.load(Ordering::Relaxed) && self.allow_open {
            // Clients that must send some key (the openai library) still work.
            return Ok(Identity::anonymous());
        }
        Err(refused())
    }

    async fn check_key(&self, token: &str) -> Result<Identity, ApiError> {
        let hash = key_hash(token);
        let cached = {
            let k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            k.entries.get(&hash).cloned()
        };

        let result = match cached {
            Some(r) => r,
            None => {
                let r = match aula_store::db::within(self.store.check_key(token)).await {
                    Ok(Ok((key, user))) => Ok(CachedKey {
                        identity: Identity {
                            name: user.name,
                            role: user.role,
                            groups: user.groups,
                            via: Via::Key,
                        },
                        expires_ms: key.expires_ms,
                    }),
                    Ok(Err(problem)) => Err(problem),
                    Err(e) => {
                        tracing::error!("cannot check an API key: {e}");
                        return Err(ApiError::StateUnavailable(
                            "Aula cannot read its user database right now; try again shortly"
                                .into(),
                        ));
                    }
                };
                {
                    let mut k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
                    if k.entries.len() >= CACHE_MAX {
                        k.entries.clear();
                    }
                    k.entries.insert(hash, r.clone());
                }
                r
            }
        };
        // The expiry is checked on every use, cached or not: a key does not
        // outlive its expiry by staying in the cache.
        let result = result.and_then(|key| match key.expires_ms {
            Some(e) if e <= now_ms() => Err(KeyProblem::Expired),
            _ => Ok(key.identity),
        });
        result.map_err(|problem| {
            tracing::debug!("API key refused ({problem:?})");
            refused()
        })
    }

    /// A trusted front end's signed statement of who its user is: an HS256
    /// JWT with `sub` (the user), `exp`, and optionally `groups`.
    fn check_user_token(&self, token: &str) -> Result<(String, Vec<String>), ApiError> {
        #[derive(serde::Deserialize)]
        struct Claims {
            sub: String,
            #[serde(default)]
            groups: Vec<String>,
        }
        let Some(jwt) = &self.jwt else {
            tracing::warn!("a front end sent X-Aula-User-Token but [auth] jwt_secret is not set");
            return Err(refused());
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        match &jwt.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &jwt.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(jwt.secret.as_bytes()),
            &v,
        )
        .map_err(|e| {
            tracing::debug!("a front end's user token was refused: {e}");
            refused()
        })?;
        let source = "the `sub` of X-Aula-User-Token";
        let user = front_end_name("user", source, &data.claims.sub)?;
        let groups = data
            .claims
            .groups
            .iter()
            .map(|g| front_end_name("group", "the `groups` of X-Aula-User-Token", g))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((user, groups))
    }

    /// The identity a front end acts for: in the front end's own namespace
    /// (`FRONTEND/NAME`, a student with the front end's groups); for a
    /// `verified` front end, the Aula user of that name (only if its role
    /// is at most the front end's), or a student new to Aula.
    async fn acting_for(&self, front: &Identity, user: &str) -> Result<Identity, ApiError> {
        if !self.verified.contains(&front.name) {
            return Ok(Identity {
                name: format!("{}/{user}", front.name),
                role: Role::Student,
                groups: front.groups.clone(),
                via: Via::FrontEnd,
            });
        }
        match aula_store::db::within(self.store.user(user)).await {
            Ok(Some(u)) if u.role > front.role => {
                tracing::warn!(
                    "the front end `{}` ({}) tried to act for `{}` ({}); refused",
                    front.name,
                    front.role,
                    u.name,
                    u.role
                );
                Err(ApiError::Forbidden {
                    message: format!(
                        "the front end `{}` has the role {} and may act only for users whose role \
                         is at most that; `{user}` must use an own Aula key",
                        front.name, front.role
                    ),
                    code: "front_end_role",
                    resets_at: None,
                })
            }
            Ok(Some(u)) => Ok(Identity {
                name: u.name,
                role: u.role,
                groups: u.groups,
                via: Via::FrontEnd,
            }),
            Ok(None) => Ok(Identity {
                name: user.to_string(),
                role: Role::Student,
                groups: front.groups.clone(),
                via: Via::FrontEnd,
            }),
            Err(e) => {
                tracing::error!("cannot look up a front end's user: {e}");
                Err(ApiError::StateUnavailable(
                    "Aula cannot read its user database right now; try again shortly".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer  abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", HeaderValue::from_static("token xyz"));
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn front_end_names() {
        let mut h = HeaderMap::new();
        assert_eq!(front_end_user(&h).ok(), Some(None));
        h.insert("x-openwebui-user-name", HeaderValue::from_static(" ada "));
        assert_eq!(front_end_user(&h).ok().flatten().as_deref(), Some("ada"));
        h.insert(
            "x-openwebui-user-email",
            HeaderValue::from_static("ada@uni.edu"),
        );
        assert_eq!(
            front_end_user(&h).ok().flatten().as_deref(),
            Some("ada@uni.edu")
        );
    }

    /// Names are refused, not rewritten into somebody else's.
    #[test]
    fn front_end_names_with_bad_characters_are_refused() {
        let long = "a".repeat(65);
        for bad in [
            "prof+x@uni.edu",
            "Ada Lovelace",
            "a/b",
            long.as_str(),
            "local-admin",
            "anonymous",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                "x-openwebui-user-email",
                HeaderValue::from_str(bad).unwrap(),
            );
            // A valid name further down does not rescue a bad first one.
            h.insert("x-openwebui-user-id", HeaderValue::from_static("ok"));
            let e = front_end_user(&h).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.to_string().contains("x-openwebui-user-email"), "{e}");
        }
    }

    static DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// A fresh SQLite store in a temporary directory.
    async fn temp_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "aula-auth-test-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open_in(&dir).await.unwrap(), dir)
    }

    async fn user(store: &Store, name: &str, role: Role) -> String {
        store
            .put_user(
                &aula_store::User {
                    name: name.into(),
                    role,
                    groups: vec![],
                },
                false,
            )
            .await
            .unwrap();
        store.create_key(name, None).await.unwrap().1
    }

    async fn authenticator(store: &Store, jwt: Option<&str>) -> Authenticator {
        Authenticator::new(
            store.clone(),
            AuthSettings {
                trusted: vec!["webui".into(), "webui-t".into(), "openui".into()],
                verified: vec!["webui".into(), "webui-t".into()],
                jwt: jwt.map(|s| JwtConfig {
                    secret: s.into(),
                    audience: None,
                    issuer: None,
                }),
                ..AuthSettings::default()
            },
            aula_fleet::backend::http_client(),
        )
        .await
        .unwrap()
    }

    fn acting(key: &str, header: &'static str, user: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        h.insert(header, HeaderValue::from_str(user).unwrap());
        h
    }

    /// A front end (a student, or a teacher) may not lend its users an
    /// admin's or a teacher's role by naming them.
    #[tokio::test]
    async fn front_ends_act_only_for_users_of_at_most_their_role() {
        let (store, dir) = temp_store().await;
        let student_fe = user(&store, "webui", Role::Student).await;
        let teacher_fe = user(&store, "webui-t", Role::Teacher).await;
        user(&store, "prof@uni.edu", Role::Admin).await;
        user(&store, "tea@uni.edu", Role::Teacher).await;
        user(&store, "ada@uni.edu", Role::Student).await;
        let a = authenticator(&store, None).await;
        let email = "x-openwebui-user-email";
        let status = |r: Result<Identity, ApiError>| r.map(|i| i.role).map_err(|e| e.status());

        let forbidden = Err(axum::http::StatusCode::FORBIDDEN);
        for (key, who, want) in [
            (&student_fe, "prof@uni.edu", forbidden),
            (&student_fe, "tea@uni.edu", forbidden),
            (&student_fe, "ada@uni.edu", Ok(Role::Student)),
            (&student_fe, "new@uni.edu", Ok(Role::Student)),
            (&teacher_fe, "prof@uni.edu", forbidden),
            (&teacher_fe, "tea@uni.edu", Ok(Role::Teacher)),
            (&teacher_fe, "ada@uni.edu", Ok(Role::Student)),
        ] {
            let got = a.authenticate(&acting(key, email, who)).await;
            if let Ok(id) = &got {
                assert_eq!((id.name.as_str(), id.via), (who, Via::FrontEnd));
            }
            assert_eq!(status(got), want, "{who}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 30, finding 8: a front end not listed in `verified` acts for
    /// users of its own namespace — a student signing up there under a
    /// classmate's (or a professor's) address is a new student, never them.
    #[tokio::test]
    async fn an_unverified_front_end_acts_in_its_own_namespace() {
        let (store, dir) = temp_store().await;
        let fe = user(&store, "openui", Role::Admin).await;
        user(&store, "prof@uni.edu", Role::Admin).await;
        user(&store, "ada@uni.edu", Role::Student).await;
        let a = authenticator(&store, None).await;
        for who in ["prof@uni.edu", "ada@uni.edu", "new@uni.edu"] {
            let id = a
                .authenticate(&acting(&fe, "x-openwebui-user-email", who))
                .await
                .unwrap();
            assert_eq!(id.name, format!("openui/{who}"));
            assert_eq!((id.role, id.via), (Role::Student, Via::FrontEnd));
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `prof+x@uni.edu`, whom a front end let sign up, is not the Aula
    /// user `prof_x@uni.edu` (even for a front end allowed to act for admins).
    #[tokio::test]
    async fn front_ends_cannot_rewrite_a_name_into_another() {
        let (store, dir) = temp_store().await;
        let fe = user(&store, "webui", Role::Admin).await;
        user(&store, "prof_x@uni.edu", Role::Admin).await;
        let e = authenticator(&store, None)
            .await
            .authenticate(&acting(&fe, "x-openwebui-user-email", "prof+x@uni.edu"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        let a = authenticator(&store, Some("s3cret")).await;
        // With a jwt_secret, plain headers name nobody: only the token does.
        let e = a
            .authenticate(&acting(&fe, "x-openwebui-user-email", "ada@uni.edu"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::UNAUTHORIZED);

        // The same through a signed user token.
        let token = |sub: &str, groups: &[&str]| {
            let exp = now_ms() / 1000 + 600;
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &serde_json::json!({"sub": sub, "exp": exp, "groups": groups}),
                &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
            )
            .unwrap()
        };
        let e = a
            .authenticate(&acting(
                &fe,
                "x-aula-user-token",
                &token("prof+x@uni.edu", &[]),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        let e = a
            .authenticate(&acting(
                &fe,
                "x-aula-user-token",
                &token("ada", &["cs+101"]),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        let id = a
            .authenticate(&acting(&fe, "x-aula-user-token", &token("ada", &["cs101"])))
            .await
            .unwrap();
        assert_eq!(
            (id.name.as_str(), id.groups),
            ("ada", vec!["cs101".to_string()])
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// With `jwt_audience` and `jwt_issuer` set, a user token must carry
    /// both, with those values; without them, `aud`/`iss` are not needed.
    #[tokio::test]
    async fn signed_user_tokens_name_the_configured_audience_and_issuer() {
        let (store, dir) = temp_store().await;
        let fe = user(&store, "webui", Role::Student).await;
        let strict = Authenticator::new(
            store.clone(),
            AuthSettings {
                trusted: vec!["webui".into()],
                verified: vec!["webui".into()],
                jwt: Some(JwtConfig {
                    secret: "s3cret".into(),
                    audience: Some("aula".into()),
                    issuer: Some("https://chat.uni.edu".into()),
                }),
                ..AuthSettings::default()
            },
            aula_fleet::backend::http_client(),
        )
        .await
        .unwrap();
        let lax = authenticator(&store, Some("s3cret")).await;
        let token = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "ada", "exp": now_ms() / 1000 + 600});
            for (k, v) in extra.as_object().unwrap() {
                claims[k] = v.clone();
            }
            let t = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
            )
            .unwrap();
            acting(&fe, "x-aula-user-token", &t)
        };
        let ok = serde_json::json!({"aud": "aula", "iss": "https://chat.uni.edu"});
        for (claims, strict_ok) in [
            (serde_json::json!({}), false),
            (serde_json::json!({"aud": "aula"}), false),
            (serde_json::json!({"iss": "https://chat.uni.edu"}), false),
            (
                serde_json::json!({"aud": "other", "iss": "https://chat.uni.edu"}),
                false,
            ),
            (
                serde_json::json!({"aud": "aula", "iss": "https://evil.example"}),
                false,
            ),
            (ok.clone(), true),
        ] {
            let got = strict.authenticate(&token(claims.clone())).await;
            assert_eq!(got.is_ok(), strict_ok, "{claims}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.status(), axum::http::StatusCode::UNAUTHORIZED);
            }
            // Without audience and issuer configured, any (or none) is accepted.
            let got = lax.authenticate(&token(claims.clone())).await;
            assert_eq!(got.map(|i| i.name).ok().as_deref(), Some("ada"), "{claims}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The local admin token makes an admin, also where no users exist.
    #[tokio::test]
    async fn the_local_admin_token_is_an_admin() {
        let (store, dir) = temp_store().await;
        let a = Authenticator::new(
            store.clone(),
            AuthSettings {
                allow_open: true,
                local_admin: Some("aula-local-abcdefghijklmnopqrstuvwxyz0123456789".into()),
                ..AuthSettings::default()
            },
            aula_fleet::backend::http_client(),
        )
        .await
        .unwrap();
        let with = |k: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {k}")).unwrap(),
            );
            h
        };
        let id = a
            .authenticate(&with("aula-local-abcdefghijklmnopqrstuvwxyz0123456789"))
            .await
            .unwrap();
        assert_eq!((id.role, id.via), (Role::Admin, Via::Local));
        // Open mode: anyone else is an anonymous student, never an admin.
        let id = a.authenticate(&HeaderMap::new()).await.unwrap();
        assert_eq!((id.role, id.via), (Role::Student, Via::Open));
        // A wrong token of that shape is an unknown key.
        let e = a
            .authenticate(&with("aula-local-abcdefghijklmnopqrstuvwxyz012345678X"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::UNAUTHORIZED);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A key that expires is refused from then on, though it was cached.
    #[tokio::test]
    async fn cached_keys_expire() {
        let (store, dir) = temp_store().await;
        let forever = user(&store, "ada", Role::Student).await;
        // 10 s: time enough for the first check on a busy machine.
        let (_, brief) = store
            .create_key("ada", Some(10.0 / 86_400.0))
            .await
            .unwrap();
        let a = authenticator(&store, None).await;
        let bearer = |k: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {k}")).unwrap(),
            );
            h
        };
        assert_eq!(a.authenticate(&bearer(&brief)).await.unwrap().name, "ada");
        // Refused once it has expired, although it is in the cache: waited
        // for (bounded), not assumed after a fixed sleep.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let e = loop {
            match a.authenticate(&bearer(&brief)).await {
                Err(e) => break e,
                Ok(_) => {
                    assert!(std::time::Instant::now() < deadline, "never expired");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        assert_eq!(e.status(), axum::http::StatusCode::UNAUTHORIZED);
        assert!(a.authenticate(&bearer(&forever)).await.is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
