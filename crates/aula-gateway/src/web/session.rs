//! Web sessions: who is looking at the page.
//!
//! Rules:
//! - The browser holds only a random session id, in an `HttpOnly`,
//!   `SameSite=Lax` cookie. The credential behind it (an Aula key, or a
//!   JupyterHub token, pasted or from the Hub's OAuth) stays in this
//!   process's memory and is checked again on every page through the same
//!   [`crate::auth::Authenticator`] as the API: a revoked key or a deleted
//!   user ends the session at the next click.
//! - Every visitor gets a session (signed in or not), so every form can
//!   carry a per-session CSRF token; a POST is accepted only with that token
//!   and not from another site (`Sec-Fetch-Site`, `Origin`).
//! - Signing in replaces the session id (no fixation); signing out forgets it.
//! - Sessions end after [`IDLE`] without use or [`MAX_AGE`] in all; at most
//!   [`MAX_SESSIONS`] are kept (the least recently used goes first). A
//!   restart of the gateway signs everyone out.

use axum::http::{HeaderMap, HeaderValue, header};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "aula_session";
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_SESSIONS: usize = 20_000;

#[derive(Clone)]
pub struct Session {
    pub id: String,
    pub csrf: String,
    /// The credential signed in with; `None` before signing in.
    pub token: Option<String>,
    /// The OAuth `state` of a sign-in with the Hub in progress, and where to go after.
    pub oauth: Option<(String, String)>,
    created: Instant,
    used: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn new_id() -> String {
    crate::random_id(32)
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session the request's cookie names, if it is alive.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let mut map = self.lock();
        let s = map.get_mut(&id)?;
        if s.used.elapsed() > IDLE || s.created.elapsed() > MAX_AGE {
            map.remove(&id);
            return None;
        }
        s.used = Instant::now();
        Some(s.clone())
    }

    /// A new session (not signed in).
    pub fn create(&self) -> Session {
        let now = Instant::now();
        let s = Session {
            id: new_id(),
            csrf: new_id(),
            token: None,
            oauth: None,
            created: now,
            used: now,
        };
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.used.elapsed() <= IDLE && s.created.elapsed() <= MAX_AGE);
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map.values().min_by_key(|s| s.used).map(|s| s.id.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(s.id.clone(), s.clone());
        s
    }

    /// Sign in: the old session is forgotten, a new one holds `token`.
    pub fn sign_in(&self, old: &str, token: String) -> Session {
        self.lock().remove(old);
        let mut s = self.create();
        s.token = Some(token);
        self.lock().insert(s.id.clone(), s.clone());
        s
    }

    pub fn set_oauth(&self, id: &str, oauth: Option<(String, String)>) {
        if let Some(s) = self.lock().get_mut(id) {
            s.oauth = oauth;
        }
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Sessions held now (for tests and the page's own figures).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` header for a session under `path`.
pub fn set_cookie(id: &str, path: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        MAX_AGE.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("aula_session=; Max-Age=0"))
}

/// The `Set-Cookie` header that removes the session cookie.
pub fn clear_cookie(path: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path={path}; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("aula_session=; Max-Age=0"))
}

/// Is this request from another site? Browsers send `Sec-Fetch-Site`; older
/// ones at least `Origin` on a cross-site POST, which must then name the host
/// the request was sent to.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => false,
        Some("null") => true,
        Some(origin) => {
            let host = headers
                .get("x-forwarded-host")
                .or(headers.get(header::HOST))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            origin_host != host
        }
    }
}

/// Equal in constant time (CSRF tokens).
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A `next=` target that stays on this site: a path under `base`, not a
/// scheme-relative `//host` or a backslash trick; else the home page.
pub fn safe_next(next: Option<&str>, base: &str) -> String {
    let home = format!("{base}/");
    let Some(n) = next else { return home };
    let ok = n.starts_with('/')
        && !n.starts_with("//")
        && !n.contains('\\')
        && !n.chars().any(char::is_control)
        && n.starts_with(&home)
        && !n.contains("/signin")
        && !n.contains("/signout");
    if ok { n.to_string() } else { home }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_targets_stay_on_this_site() {
        assert_eq!(safe_next(Some("/usage"), ""), "/usage");
        assert_eq!(safe_next(Some("//evil.example/x"), ""), "/");
        assert_eq!(safe_next(Some("https://evil.example/"), ""), "/");
        assert_eq!(safe_next(Some("/\\evil.example"), ""), "/");
        assert_eq!(safe_next(Some("/signin?next=/signin"), ""), "/");
        assert_eq!(safe_next(Some("/usage"), "/aula"), "/aula/");
        assert_eq!(safe_next(Some("/aula/usage"), "/aula"), "/aula/usage");
        assert_eq!(safe_next(None, "/aula"), "/aula/");
    }

    #[test]
    fn cross_site_posts_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!cross_site(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_site(&h));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!cross_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site(&h));
    }

    #[test]
    fn signing_in_replaces_the_session_and_cookies_parse() {
        let s = Sessions::default();
        let a = s.create();
        let b = s.sign_in(&a.id, "aula-secret".into());
        assert_ne!(a.id, b.id);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={}", a.id)).unwrap(),
        );
        assert!(s.get(&h).is_none(), "the old id is forgotten");
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={}; y=2", b.id)).unwrap(),
        );
        assert_eq!(s.get(&h).unwrap().token.as_deref(), Some("aula-secret"));
        s.forget(&b.id);
        assert!(s.get(&h).is_none());
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
    }
}
