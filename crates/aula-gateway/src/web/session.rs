//! Web sessions: who is looking at the page.
//!
//! Rules:
//! - The browser holds only a random session id, in an `HttpOnly`,
//!   `SameSite=Lax` cookie. The credential behind it (an Aula key, or a
//!   JupyterHub token, pasted or from the Hub's OAuth) is checked again on
//!   every page through the same [`crate::auth::Authenticator`] as the API:
//!   a revoked key or a deleted user ends the session at the next click.
//! - **Signed-in sessions live in the database**, so any gateway sharing it
//!   serves any signed-in page and a restart signs nobody out. The database
//!   holds neither the session id nor the credential in a usable form
//!   (`aula_store::web_sessions`).
//! - Sessions not signed in (anyone can make one with a page load) stay in
//!   this gateway's memory: a form loaded from one gateway and sent to
//!   another after a failover, or a Hub sign-in that comes back to another,
//!   is asked again.
//! - Every visitor gets a session (signed in or not), so every form can
//!   carry a per-session CSRF token; a POST is accepted only with that token
//!   and not from another site (`Sec-Fetch-Site`, `Origin`).
//! - Signing in replaces the session id (no fixation); signing out forgets it.
//! - Sessions end after [`IDLE`] without use or [`MAX_AGE`] in all.
//! - **Visitors cannot sign others out.** At most [`MAX_ANONYMOUS`]
//!   sessions not signed in, where a flood only pushes out the least
//!   recently used *anonymous* sessions (someone half-way through signing
//!   in may have to submit the form again); at most [`MAX_SESSIONS`] signed
//!   in, and at most [`MAX_PER_CREDENTIAL`] for one credential (its own
//!   oldest goes), so one student signing in over and over only ends their
//!   own sessions. Past a cap, the oldest eighth is dropped at once, so a
//!   flood costs no more than a sort per eighth.

use aula_store::{Store, StoreError};
use axum::http::{HeaderMap, HeaderValue, header};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "aula_session";
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Signed-in sessions kept, all users together.
pub const MAX_SESSIONS: usize = 20_000;
/// Sessions not signed in kept (page loads, forms, Hub sign-ins under way).
pub const MAX_ANONYMOUS: usize = 20_000;
/// Signed-in sessions kept for one credential.
pub const MAX_PER_CREDENTIAL: usize = 16;

const BOUNDS: aula_store::web_sessions::Bounds = aula_store::web_sessions::Bounds {
    per_credential: MAX_PER_CREDENTIAL as i64,
    total: MAX_SESSIONS as i64,
    idle_ms: IDLE.as_millis() as i64,
    max_age_ms: MAX_AGE.as_millis() as i64,
};

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

pub struct Sessions {
    /// Not signed in: this gateway's own.
    anonymous: Mutex<HashMap<String, Session>>,
    /// Signed in: the database's.
    store: Store,
}

fn new_id() -> String {
    crate::random_id(32)
}

fn alive(s: &Session) -> bool {
    s.used.elapsed() <= IDLE && s.created.elapsed() <= MAX_AGE
}

/// Make room for one more in `map` (at most `cap`): the expired go, then,
/// if still full, the least recently used eighth.
fn make_room(map: &mut HashMap<String, Session>, cap: usize) {
    if map.len() < cap {
        return;
    }
    map.retain(|_, s| alive(s));
    if map.len() < cap {
        return;
    }
    let mut by_use: Vec<(Instant, String)> = map.values().map(|s| (s.used, s.id.clone())).collect();
    let drop_n = (cap / 8).max(1).min(by_use.len());
    by_use.select_nth_unstable_by_key(drop_n - 1, |(used, _)| *used);
    for (_, id) in by_use.into_iter().take(drop_n) {
        map.remove(&id);
    }
}

impl Sessions {
    pub fn new(store: Store) -> Sessions {
        Sessions {
            anonymous: Default::default(),
            store,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.anonymous.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session the request's cookie names, if it is alive.
    pub async fn get(&self, headers: &HeaderMap) -> Result<Option<Session>, StoreError> {
        let Some(id) = cookie(headers, COOKIE) else {
            return Ok(None);
        };
        {
            let mut map = self.lock();
            if let Some(s) = map.get_mut(&id) {
                if !alive(s) {
                    map.remove(&id);
                    return Ok(None);
                }
                s.used = Instant::now();
                return Ok(Some(s.clone()));
            }
        }
        let Some(w) = self
            .store
            .web_session(&id, aula_store::now_ms(), BOUNDS)
            .await?
        else {
            return Ok(None);
        };
        let now = Instant::now();
        Ok(Some(Session {
            id,
            csrf: w.csrf,
            token: Some(w.token),
            oauth: None,
            created: now,
            used: now,
        }))
    }

    fn fresh() -> Session {
        let now = Instant::now();
        Session {
            id: new_id(),
            csrf: new_id(),
            token: None,
            oauth: None,
            created: now,
            used: now,
        }
    }

    /// A new session (not signed in).
    pub fn create(&self) -> Session {
        let s = Self::fresh();
        let mut map = self.lock();
        make_room(&mut map, MAX_ANONYMOUS);
        map.insert(s.id.clone(), s.clone());
        s
    }

    /// Sign in: the old session is forgotten, a new one holds `token`.
    pub async fn sign_in(&self, old: &str, token: String) -> Result<Session, StoreError> {
        self.forget(old).await?;
        let mut s = Self::fresh();
        self.store
            .add_web_session(&s.id, &token, &s.csrf, aula_store::now_ms(), BOUNDS)
            .await?;
        s.token = Some(token);
        Ok(s)
    }

    pub fn set_oauth(&self, id: &str, oauth: Option<(String, String)>) {
        if let Some(s) = self.lock().get_mut(id) {
            s.oauth = oauth;
        }
    }

    pub async fn forget(&self, id: &str) -> Result<(), StoreError> {
        self.lock().remove(id);
        self.store.forget_web_session(id).await
    }

    /// Sessions not signed in held by this gateway now.
    pub fn anonymous(&self) -> usize {
        self.lock().len()
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

    async fn sessions(tag: &str) -> Sessions {
        let dir = std::env::temp_dir().join(format!("aula-sessions-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Sessions::new(Store::open_in(&dir).await.unwrap())
    }

    #[tokio::test]
    async fn signing_in_replaces_the_session_and_cookies_parse() {
        let s = sessions("replace").await;
        let a = s.create();
        let b = s.sign_in(&a.id, "aula-secret".into()).await.unwrap();
        assert_ne!(a.id, b.id);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={}", a.id)).unwrap(),
        );
        assert!(
            s.get(&h).await.unwrap().is_none(),
            "the old id is forgotten"
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={}; y=2", b.id)).unwrap(),
        );
        let got = s.get(&h).await.unwrap().unwrap();
        assert_eq!(got.token.as_deref(), Some("aula-secret"));
        assert_eq!(got.csrf, b.csrf, "the form token survives the trip");
        s.forget(&b.id).await.unwrap();
        assert!(s.get(&h).await.unwrap().is_none());
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={id}")).unwrap(),
        );
        h
    }

    /// Issue 30, finding 2: 20,100 anonymous page loads signed a teacher
    /// out. A flood of anonymous sessions now only pushes out other
    /// anonymous sessions, and stays within its cap.
    #[tokio::test]
    async fn anonymous_page_loads_never_sign_anyone_out() {
        let s = sessions("flood").await;
        let first = s.create();
        let teacher = s.sign_in(&first.id, "teacher-key".into()).await.unwrap();
        for _ in 0..MAX_ANONYMOUS + 100 {
            s.create();
        }
        assert!(s.anonymous() <= MAX_ANONYMOUS, "{}", s.anonymous());
        let got = s.get(&with_cookie(&teacher.id)).await.unwrap();
        assert_eq!(
            got.and_then(|g| g.token).as_deref(),
            Some("teacher-key"),
            "the signed-in session survived the flood"
        );
    }

    /// One credential signing in again and again ends only its own oldest
    /// sessions, never another user's; a second gateway on the same
    /// database (a restart, or another front gateway) serves them.
    #[tokio::test]
    async fn one_credential_holds_a_bounded_number_of_sessions() {
        let s = sessions("bounded").await;
        let a = s.create();
        let teacher = s.sign_in(&a.id, "teacher-key".into()).await.unwrap();
        let mut last = None;
        for _ in 0..MAX_PER_CREDENTIAL * 3 {
            let anon = s.create();
            last = Some(s.sign_in(&anon.id, "student-key".into()).await.unwrap());
        }
        let other = Sessions::new(s.store.clone());
        assert!(
            other
                .get(&with_cookie(&teacher.id))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            other
                .get(&with_cookie(&last.unwrap().id))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            s.store.web_sessions().await.unwrap(),
            1 + MAX_PER_CREDENTIAL as i64
        );
        assert_eq!(s.anonymous(), 0, "signing in forgets the anonymous session");
    }
}
