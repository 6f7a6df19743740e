//! The web page of the box, served by `aula serve` at `/` (the API stays
//! under `/v1` and `/admin`): server-rendered HTML from templates compiled
//! into the binary, a little vanilla JavaScript for the live charts and the
//! playground's streaming, nothing fetched from elsewhere.
//!
//! Rules:
//! - Every page and every action checks the visitor's role here, on the
//!   server ([`Visitor`]): students see only their own usage and keys;
//!   teachers and admins see the box, its users and their usage; only
//!   admins load and unload models or make teachers and admins. With no
//!   authentication configured (loopback, no users) the page is open, like
//!   the API, and shows the teacher's view; admin actions still need an admin.
//! - Sessions and cross-site protection: [`session`].
//! - The playground's requests pass the same limits, fair queue and ledger as
//!   the API's, as the signed-in user ([`crate::pipeline::call`]).
//! - Links and the session cookie carry the configured base path
//!   (`[web] public_url`, for a reverse proxy at e.g. `/aula/`).

/// `Ok` value, or return the page the `Err` holds.
macro_rules! page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

mod pages;
pub mod session;
mod signin;

use crate::identity::Identity;
use aula_store::Role;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use session::{Session, Sessions};
use std::sync::Arc;

/// What the web page holds: the request path's services, its sessions and
/// templates, fine-tuning (the jobs page) and Responses (the playground).
#[derive(Clone)]
pub struct Handle {
    pub gw: Arc<crate::pipeline::Gateway>,
    pub web: Arc<Web>,
    pub finetune: Arc<crate::finetune::FineTune>,
    pub responses: crate::responses::Handle,
}

/// `[web]` and the Hub's OAuth, as the gateway runs them.
#[derive(Debug, Clone, Default)]
pub struct WebSettings {
    /// The gateway as browsers reach it, e.g. `https://box.example/aula`.
    pub public_url: Option<String>,
    /// "Sign in with JupyterHub": the Hub as browsers reach it, and the
    /// OAuth client id of Aula's service there.
    pub hub_oauth: Option<HubOAuth>,
}

#[derive(Debug, Clone)]
pub struct HubOAuth {
    pub public_url: String,
    pub client_id: String,
}

pub struct Web {
    pub sessions: Sessions,
    /// The path prefix of every link ("" or e.g. "/aula").
    pub base: String,
    pub secure: bool,
    pub settings: WebSettings,
    templates: minijinja::Environment<'static>,
}

impl Web {
    /// The page's settings and its templates (compiled into the binary: a
    /// template that does not parse is a build mistake, named here).
    pub fn new(settings: WebSettings, store: aula_store::Store) -> Result<Web, String> {
        let (base, secure) = match &settings.public_url {
            Some(u) => {
                let rest = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
                let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
                (
                    path.trim_end_matches('/').to_string(),
                    u.starts_with("https://"),
                )
            }
            None => (String::new(), false),
        };
        let mut env = minijinja::Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .map_err(|e| format!("the page template {name} does not parse: {e}"))?;
        }
        env.add_filter("gb", |b: Option<u64>| match b {
            Some(b) => format!("{:.1} GB", b as f64 / 1e9),
            None => "—".into(),
        });
        env.add_filter("num", |n: i64| thousands(n));
        env.add_filter("urlencode", |s: String| urlencoding(&s).replace('/', "%2F"));
        env.add_filter("date", |ms: Option<i64>| aula_store::tables::date_of(ms));
        Ok(Web {
            sessions: Sessions::new(store),
            base,
            secure,
            settings,
            templates: env,
        })
    }

    /// The redirect URI registered at the Hub for Aula's service.
    pub fn oauth_callback(&self) -> Option<String> {
        self.settings
            .public_url
            .as_ref()
            .map(|u| format!("{}/oauth_callback", u.trim_end_matches('/')))
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("me.html", include_str!("templates/me.html")),
    ("usage.html", include_str!("templates/usage.html")),
    ("keys.html", include_str!("templates/keys.html")),
    ("users.html", include_str!("templates/users.html")),
    ("playground.html", include_str!("templates/playground.html")),
    ("error.html", include_str!("templates/error.html")),
    ("plan.html", include_str!("templates/plan.html")),
    ("user.html", include_str!("templates/user.html")),
    (
        "fine_tuning.html",
        include_str!("templates/fine_tuning.html"),
    ),
];

const CSS: &str = include_str!("static/aula.css");
const JS: &str = include_str!("static/aula.js");

/// The page's routes (merged beside the API's in [`crate::server::app`]).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Handle: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/", get(pages::overview))
        .route("/usage", get(pages::usage))
        .route("/keys", get(pages::keys).post(pages::create_key))
        .route("/keys/{key_id}/revoke", post(pages::revoke_key))
        .route("/users", get(pages::users).post(pages::add_user))
        .route("/users/{name}", get(pages::user))
        .route("/users/{name}/keys", post(pages::create_user_key))
        .route("/models/{model}/{action}", post(pages::model_action))
        .route("/plan", get(pages::plan))
        .route("/fine-tuning", get(pages::fine_tuning))
        .route("/playground", get(pages::playground))
        .route("/playground/chat", post(pages::playground_chat))
        .route("/playground/responses", post(pages::playground_responses))
        .route("/events", get(pages::events))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/signin/hub", get(signin::hub))
        .route("/oauth_callback", get(signin::callback))
        .route("/signout", post(signin::signout))
        .route("/static/aula.css", get(|| async { asset(CSS, "text/css") }))
        .route(
            "/static/aula.js",
            get(|| async { asset(JS, "text/javascript") }),
        )
}

fn asset(text: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        text,
    )
        .into_response()
}

/// A form body or query string; a malformed one reads as empty (every
/// field is then missing, and each page says what it needs).
pub fn fields(b: &[u8]) -> std::collections::HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(b)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

/// Who is looking, decided once per request.
pub struct Visitor {
    pub session: Session,
    /// Set when this request started the session: the cookie goes out with the answer.
    fresh: bool,
    pub id: Option<Identity>,
    /// No authentication is configured (loopback, no users).
    pub open: bool,
}

// The `Err` of these checks is the page sent instead (a redirect or an
// error page): built once per refused request, never on a hot path.
#[allow(clippy::result_large_err)]
impl Visitor {
    pub async fn of(st: &Handle, headers: &HeaderMap) -> Result<Visitor, Response> {
        let unavailable = |e: aula_store::StoreError| {
            tracing::warn!("web: reading a session: {e}");
            aula_protocol::ApiError::Unavailable(
                "the database did not answer; try again in a moment".into(),
            )
            .into_response()
        };
        let (session, fresh) = match st.web.sessions.get(headers).await.map_err(unavailable)? {
            Some(s) => (s, false),
            None => (st.web.sessions.create(), true),
        };
        let open = !st.gw.auth.auth_configured();
        let mut creds = HeaderMap::new();
        if let Some(t) = &session.token
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}"))
        {
            creds.insert(header::AUTHORIZATION, v);
        }
        let id = if session.token.is_some() || open {
            match st.gw.auth.authenticate(&creds).await {
                Ok(id) => Some(id),
                Err(aula_protocol::ApiError::Unauthorized(_)) => {
                    // Revoked or expired since: the session ends here.
                    if session.token.is_some() {
                        st.web
                            .sessions
                            .forget(&session.id)
                            .await
                            .map_err(unavailable)?;
                    }
                    None
                }
                Err(e) => return Err(e.into_response()),
            }
        } else {
            None
        };
        Ok(Visitor {
            session,
            fresh,
            id,
            open,
        })
    }

    /// A form POST: the visitor, and the form's fields once its CSRF token
    /// and origin are checked.
    pub async fn post(
        st: &Handle,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Visitor, std::collections::HashMap<String, String>), Response> {
        let v = Visitor::of(st, headers).await?;
        let f = fields(body);
        v.check_post(st, headers, f.get("csrf").map(String::as_str))?;
        Ok((v, f))
    }

    pub fn staff(&self) -> bool {
        self.open
            || self
                .id
                .as_ref()
                .is_some_and(|i| matches!(i.role, Role::Admin | Role::Teacher))
    }

    pub fn admin(&self) -> bool {
        self.id.as_ref().is_some_and(|i| i.role == Role::Admin)
    }

    /// The signed-in identity, or the sign-in page (coming back to `here`).
    pub fn require(&self, st: &Handle, here: &str) -> Result<&Identity, Response> {
        self.id.as_ref().ok_or_else(|| {
            let next = format!("{}{here}", st.web.base);
            self.finish(
                st,
                redirect(&format!(
                    "{}/signin?next={}",
                    st.web.base,
                    urlencoding(&next)
                )),
            )
        })
    }

    pub fn require_staff(&self, st: &Handle, here: &str) -> Result<&Identity, Response> {
        let id = self.require(st, here)?;
        if self.staff() {
            Ok(id)
        } else {
            Err(self.error(
                st,
                StatusCode::FORBIDDEN,
                "Only teachers and admins may see this page.",
            ))
        }
    }

    /// A POST's CSRF token and origin: refused unless both are right.
    pub fn check_post(
        &self,
        st: &Handle,
        headers: &HeaderMap,
        token: Option<&str>,
    ) -> Result<(), Response> {
        let token = token.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
        if session::cross_site(headers)
            || self.fresh
            || !token.is_some_and(|t| session::same_token(t, &self.session.csrf))
        {
            return Err(self.error(
                st,
                StatusCode::FORBIDDEN,
                "This form was not sent from this site's own page (or the page was open too long). Reload the page and try again.",
            ));
        }
        Ok(())
    }

    /// The template context every page shares.
    pub fn context(&self, st: &Handle, page: &str) -> minijinja::Value {
        minijinja::context! {
            base => st.web.base.clone(),
            page => page,
            csrf => self.session.csrf.clone(),
            who => self.id.as_ref().map(|i| i.name.clone()),
            role => self.id.as_ref().map(|i| i.role.as_str()),
            staff => self.staff(),
            admin => self.admin(),
            open => self.open,
        }
    }

    /// Render `template` with the shared context and `extra`.
    pub fn render(
        &self,
        st: &Handle,
        status: StatusCode,
        template: &str,
        page: &str,
        extra: minijinja::Value,
    ) -> Response {
        let ctx = minijinja::context! { ..self.context(st, page), ..extra };
        let html = st
            .web
            .templates
            .get_template(template)
            .and_then(|t| t.render(ctx));
        let resp = match html {
            Ok(h) => (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                h,
            )
                .into_response(),
            Err(e) => {
                tracing::error!("the page {template} failed to render: {e:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        };
        self.finish(st, resp)
    }

    pub fn error(&self, st: &Handle, status: StatusCode, message: &str) -> Response {
        self.render(
            st,
            status,
            "error.html",
            "error",
            minijinja::context! { message => message, status => status.as_u16() },
        )
    }

    /// Every answer: the session cookie when it is new, never cached.
    pub fn finish(&self, st: &Handle, mut resp: Response) -> Response {
        let h = resp.headers_mut();
        if self.fresh {
            h.append(
                header::SET_COOKIE,
                session::set_cookie(&self.session.id, &cookie_path(st), st.web.secure),
            );
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
        );
        h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
        resp
    }
}

pub fn cookie_path(st: &Handle) -> String {
    format!("{}/", st.web.base)
}

pub fn redirect(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/")),
        )],
    )
        .into_response()
}

/// Percent-encode a query value.
pub fn urlencoding(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// 1234567 -> "1 234 567" (thin groups read in every locale).
pub fn thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_template_parses_and_the_base_path_is_read_from_the_public_url() {
        let dir = std::env::temp_dir().join(format!("aula-web-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = aula_store::Store::open_in(&dir).await.unwrap();
        let w = Web::new(
            WebSettings {
                public_url: Some("https://box.example/aula/".into()),
                hub_oauth: None,
            },
            store.clone(),
        )
        .unwrap();
        assert_eq!(w.base, "/aula");
        assert!(w.secure);
        assert_eq!(
            w.oauth_callback().as_deref(),
            Some("https://box.example/aula/oauth_callback")
        );
        let w = Web::new(WebSettings::default(), store).unwrap();
        assert_eq!((w.base.as_str(), w.secure), ("", false));
        assert_eq!(thousands(1234567), "1\u{202f}234\u{202f}567");
        assert_eq!(thousands(-12), "-12");
        assert_eq!(urlencoding("/a b?x=1&y"), "/a%20b%3Fx%3D1%26y");
    }
}
