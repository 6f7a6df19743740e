//! Authentication, three ways: Aula API keys, JupyterHub tokens (resolved
//! through the Hub's REST API), and trusted front ends acting for their
//! users. Every failure reads the same to the client ("invalid or missing
//! credentials"), so nobody learns whether a user or key exists, and no
//! token ever goes into a log line or an error body.

use crate::backend::HttpClient;
use crate::identity::{Identity, Via};
use aula_protocol::ApiError;
use aula_store::identity::{KeyProblem, is_aula_key, key_hash};
use aula_store::{Role, Store};
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a running gateway learns about new and revoked keys: it re-reads the
/// database's change counter at most this often.
const KEY_REFRESH: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 100_000;

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

pub struct Authenticator {
    store: Store,
    hub: Option<HubConfig>,
    client: HttpClient,
    /// Aula users whose keys may act for the users of a front end.
    trusted: Vec<String>,
    /// Secret of the signed user tokens (HS256) trusted front ends may send.
    jwt_secret: Option<String>,
    /// With no users and no Hub, requests are served as `anonymous` — only
    /// where that was allowed (loopback, or --insecure-no-auth).
    allow_open: bool,
    open: AtomicBool,
    keys: Mutex<KeyCache>,
    hub_cache: Mutex<HashMap<String, HubAnswer>>,
}

/// When the Hub answered for a token, and what (Err: refused).
type HubAnswer = (Instant, Result<Identity, ()>);

struct KeyCache {
    generation: i64,
    checked: Option<Instant>,
    entries: HashMap<String, Result<Identity, KeyProblem>>,
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

/// A name from a front end, made safe for Aula (letters, digits, `._@-`; at most 64).
fn clean_name(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The user a front end says it acts for (Open WebUI's forwarded headers).
fn front_end_user(headers: &HeaderMap) -> Option<String> {
    [
        "x-openwebui-user-email",
        "x-openwebui-user-id",
        "x-openwebui-user-name",
    ]
    .iter()
    .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
    .map(clean_name)
    .find(|n| !n.is_empty())
}

impl Authenticator {
    pub async fn new(
        store: Store,
        hub: Option<HubConfig>,
        trusted: Vec<String>,
        jwt_secret: Option<String>,
        allow_open: bool,
        client: HttpClient,
    ) -> Result<Authenticator, aula_store::StoreError> {
        let a = Authenticator {
            store,
            hub,
            client,
            trusted,
            jwt_secret,
            allow_open,
            open: AtomicBool::new(false),
            keys: Mutex::new(KeyCache {
                generation: -1,
                checked: None,
                entries: HashMap::new(),
            }),
            hub_cache: Mutex::new(HashMap::new()),
        };
        a.refresh(true).await?;
        Ok(a)
    }

    /// Is any authentication configured (users in the database, or a Hub)?
    pub fn auth_configured(&self) -> bool {
        !self.open.load(Ordering::Relaxed)
    }

    /// Drop cached keys when users or keys changed in the database.
    async fn refresh(&self, force: bool) -> Result<(), aula_store::StoreError> {
        {
            let k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if !force && k.checked.is_some_and(|t| t.elapsed() < KEY_REFRESH) {
                return Ok(());
            }
        }
        let generation = self.store.auth_generation().await?;
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
            let no_users = self.store.users().await?.is_empty();
            self.open
                .store(no_users && self.hub.is_none(), Ordering::Relaxed);
        }
        Ok(())
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        if let Err(e) = self.refresh(false).await {
            tracing::error!("cannot read users and keys: {e}");
            return Err(ApiError::Unavailable(
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
                if let Some(user) = front_end_user(headers) {
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
                let r = match self.store.check_key(token).await {
                    Ok(Ok((_, user))) => Ok(Identity {
                        name: user.name,
                        role: user.role,
                        groups: user.groups,
                        via: Via::Key,
                    }),
                    Ok(Err(problem)) => Err(problem),
                    Err(e) => {
                        tracing::error!("cannot check an API key: {e}");
                        return Err(ApiError::Unavailable(
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
        let Some(secret) = &self.jwt_secret else {
            tracing::warn!("a front end sent X-Aula-User-Token but [auth] jwt_secret is not set");
            return Err(refused());
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            &v,
        )
        .map_err(|e| {
            tracing::debug!("a front end's user token was refused: {e}");
            refused()
        })?;
        let user = clean_name(&data.claims.sub);
        if user.is_empty() {
            return Err(refused());
        }
        Ok((
            user,
            data.claims
                .groups
                .iter()
                .map(|g| clean_name(g))
                .filter(|g| !g.is_empty())
                .collect(),
        ))
    }

    async fn acting_for(&self, front: &Identity, user: &str) -> Result<Identity, ApiError> {
        match self.store.user(user).await {
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
                Err(ApiError::Unavailable(
                    "Aula cannot read its user database right now; try again shortly".into(),
                ))
            }
        }
    }

    async fn check_hub(&self, token: &str) -> Result<Identity, ApiError> {
        let Some(hub) = &self.hub else {
            return Err(refused());
        };
        let hash = key_hash(token);
        let cached = {
            let c = self.hub_cache.lock().unwrap_or_else(|p| p.into_inner());
            c.get(&hash).cloned()
        };
        if let Some((at, r)) = cached
            && at.elapsed() < hub.cache
        {
            return r.map_err(|_| refused());
        }
        let r = self.ask_hub(hub, token).await?;
        {
            let mut c = self.hub_cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(hash, (Instant::now(), r.clone()));
        }
        r.map_err(|_| refused())
    }

    /// Ok(Ok(identity)), Ok(Err(())) for a token the Hub refuses or that
    /// lacks access to this service, Err(503) when the Hub cannot answer.
    async fn ask_hub(
        &self,
        hub: &HubConfig,
        token: &str,
    ) -> Result<Result<Identity, ()>, ApiError> {
        let unavailable = |why: String| {
            tracing::warn!("JupyterHub at {} cannot check a token: {why}", hub.url);
            ApiError::Unavailable(
                "JupyterHub cannot be reached to check your token; try again shortly".into(),
            )
        };
        let (status, body) = self
            .hub_get(hub, "/hub/api/user", token)
            .await
            .map_err(unavailable)?;
        if status == 401 || status == 403 || status == 404 {
            return Ok(Err(()));
        }
        if status != 200 {
            return Err(unavailable(format!("HTTP {status}")));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("bad JSON from /hub/api/user: {e}")))?;
        if v["kind"].as_str().is_some_and(|k| k != "user") {
            return Ok(Err(()));
        }
        let wanted = format!("access:services!service={}", hub.service);
        let allowed = v["scopes"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s == "access:services" || s.as_str() == Some(&wanted))
        });
        let Some(name) = v["name"].as_str().filter(|_| allowed) else {
            return Ok(Err(()));
        };
        let mut groups: Vec<String> = match v["groups"].as_array() {
            Some(g) => g
                .iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect(),
            None => {
                // The token could not read its groups: ask with Aula's own token.
                match self
                    .hub_get(hub, &format!("/hub/api/users/{name}"), &hub.api_token)
                    .await
                {
                    Ok((200, b)) => serde_json::from_slice::<serde_json::Value>(&b)
                        .ok()
                        .and_then(|u| {
                            u["groups"].as_array().map(|g| {
                                g.iter()
                                    .filter_map(|g| g.as_str().map(String::from))
                                    .collect()
                            })
                        })
                        .unwrap_or_default(),
                    _ => Vec::new(),
                }
            }
        };
        // A user Aula knows keeps Aula's role and gains Aula's groups.
        let local = self.store.user(name).await.ok().flatten();
        let role = local.as_ref().map(|u| u.role).unwrap_or(Role::Student);
        for g in local.map(|u| u.groups).unwrap_or_default() {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        Ok(Ok(Identity {
            name: name.to_string(),
            role,
            groups,
            via: Via::JupyterHub,
        }))
    }

    async fn hub_get(
        &self,
        hub: &HubConfig,
        path: &str,
        token: &str,
    ) -> Result<(u16, Bytes), String> {
        let req = axum::http::Request::get(format!("{}{path}", hub.url.trim_end_matches('/')))
            .header(axum::http::header::AUTHORIZATION, format!("token {token}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        tokio::time::timeout(hub.timeout, fut)
            .await
            .map_err(|_| format!("no answer within {:?}", hub.timeout))?
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
        h.insert(
            "x-openwebui-user-name",
            HeaderValue::from_static("Ada Lovelace"),
        );
        assert_eq!(front_end_user(&h).as_deref(), Some("Ada_Lovelace"));
        h.insert(
            "x-openwebui-user-email",
            HeaderValue::from_static("ada@uni.edu"),
        );
        assert_eq!(front_end_user(&h).as_deref(), Some("ada@uni.edu"));
    }
}
