//! Signing in and out: an Aula key or a JupyterHub token pasted into the
//! form, or the Hub's OAuth ("Sign in with JupyterHub": authorize -> code ->
//! token, the token then checked like any Hub token).

use super::session::{self, safe_next};
use super::{Handle, Visitor, fields, redirect, urlencoding};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use minijinja::context;

fn form_page(
    st: &Handle,
    v: &Visitor,
    next: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    v.render(
        st,
        status,
        "signin.html",
        "signin",
        context! {
            title => "Sign in",
            next => next,
            error => error,
            hub => st.web.settings.hub_oauth.is_some(),
        },
    )
}

/// `GET /signin?next=...`
pub async fn form(State(st): State<Handle>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let q = fields(q.unwrap_or_default().as_bytes());
    let next = safe_next(q.get("next").map(String::as_str), &st.web.base);
    if v.id.is_some() && !v.open {
        return v.finish(&st, redirect(&next));
    }
    form_page(&st, &v, &next, StatusCode::OK, None)
}

/// `POST /signin`: `token`, `csrf`, `next`.
pub async fn submit(State(st): State<Handle>, headers: HeaderMap, body: Bytes) -> Response {
    let (v, f) = page!(Visitor::post(&st, &headers, &body).await);
    let next = safe_next(f.get("next").map(String::as_str), &st.web.base);
    let token = f.get("token").map(|t| t.trim()).unwrap_or("");
    if token.is_empty() || token.len() > 4096 {
        return form_page(
            &st,
            &v,
            &next,
            StatusCode::BAD_REQUEST,
            Some("Paste your Aula API key or JupyterHub token."),
        );
    }
    sign_in_with(&st, &v, token, &next).await
}

/// Check `token` like an API request would, then start a signed-in session.
async fn sign_in_with(st: &Handle, v: &Visitor, token: &str, next: &str) -> Response {
    let mut h = HeaderMap::new();
    let Ok(value) = format!("Bearer {token}").parse() else {
        return form_page(
            st,
            v,
            next,
            StatusCode::UNAUTHORIZED,
            Some("That key or token is not valid."),
        );
    };
    h.insert(header::AUTHORIZATION, value);
    match st.gw.auth.authenticate(&h).await {
        Ok(id) if id.via != crate::identity::Via::Open => {
            let s = match st
                .web
                .sessions
                .sign_in(&v.session.id, token.to_string())
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("web: storing a session: {e}");
                    return form_page(
                        st,
                        v,
                        next,
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some("The database did not answer: please try again in a moment."),
                    );
                }
            };
            tracing::info!("web: {} signed in", id.name);
            let mut resp = redirect(next);
            resp.headers_mut().append(
                header::SET_COOKIE,
                session::set_cookie(&s.id, &super::cookie_path(st), st.web.secure),
            );
            resp
        }
        Ok(_) => form_page(
            st,
            v,
            next,
            StatusCode::BAD_REQUEST,
            Some("This gateway has no users yet: the page is open without signing in."),
        ),
        Err(aula_protocol::ApiError::Unauthorized(_)) => form_page(
            st,
            v,
            next,
            StatusCode::UNAUTHORIZED,
            Some("That key or token is not valid (or it was revoked or has expired)."),
        ),
        Err(e) => form_page(st, v, next, e.status(), Some(&e.to_string())),
    }
}

/// `GET /signin/hub?next=...`: off to the Hub's authorize page.
pub async fn hub(State(st): State<Handle>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let (Some(o), Some(callback)) = (&st.web.settings.hub_oauth, st.web.oauth_callback()) else {
        return v.error(
            &st,
            StatusCode::NOT_FOUND,
            "Signing in with JupyterHub is not configured here.",
        );
    };
    let q = fields(q.unwrap_or_default().as_bytes());
    let next = safe_next(q.get("next").map(String::as_str), &st.web.base);
    let state = crate::random_id(32);
    st.web
        .sessions
        .set_oauth(&v.session.id, Some((state.clone(), next)));
    let url = format!(
        "{}/hub/api/oauth2/authorize?client_id={}&redirect_uri={}&response_type=code&state={}",
        o.public_url,
        urlencoding(&o.client_id),
        urlencoding(&callback),
        state
    );
    v.finish(&st, redirect(&url))
}

/// `GET /oauth_callback?code=...&state=...`: the Hub sends the browser back.
pub async fn callback(
    State(st): State<Handle>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let q = fields(q.unwrap_or_default().as_bytes());
    let expected = v.session.oauth.clone();
    st.web.sessions.set_oauth(&v.session.id, None);
    let (Some((state, next)), Some(got), Some(code)) = (expected, q.get("state"), q.get("code"))
    else {
        return v.error(
            &st,
            StatusCode::BAD_REQUEST,
            "This sign-in did not start here (or it was already used). Start again from the sign-in page.",
        );
    };
    if !session::same_token(&state, got) {
        return v.error(
            &st,
            StatusCode::BAD_REQUEST,
            "This sign-in did not start here. Start again from the sign-in page.",
        );
    }
    match exchange(&st, code).await {
        Ok(token) => sign_in_with(&st, &v, &token, &next).await,
        Err(e) => {
            tracing::warn!("web: the Hub's token exchange failed: {e}");
            v.error(
                &st,
                StatusCode::BAD_GATEWAY,
                "JupyterHub did not confirm the sign-in. Try again, or paste a token instead.",
            )
        }
    }
}

/// The authorization code for an access token, at the Hub's token endpoint
/// (server to server, with Aula's service token as the client secret).
async fn exchange(st: &Handle, code: &str) -> Result<String, String> {
    let o = st
        .web
        .settings
        .hub_oauth
        .as_ref()
        .ok_or("no Hub sign-in configured")?;
    let hub = st.gw.auth.hub().ok_or("no Hub configured")?;
    let callback = st.web.oauth_callback().ok_or("no public_url")?;
    let form = serde_urlencoded::to_string([
        ("client_id", o.client_id.as_str()),
        ("client_secret", hub.api_token.as_str()),
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", callback.as_str()),
    ])
    .map_err(|e| e.to_string())?;
    let v = st
        .gw
        .auth
        .post_form(&format!("{}/hub/api/oauth2/token", hub.url), form)
        .await?;
    v["access_token"].as_str().map(String::from).ok_or_else(|| {
        // Its keys, never its values (tokens).
        let keys: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        format!("no access_token in the Hub's answer (keys: {keys:?})")
    })
}

/// `POST /signout`.
pub async fn signout(State(st): State<Handle>, headers: HeaderMap, body: Bytes) -> Response {
    let (v, _) = page!(Visitor::post(&st, &headers, &body).await);
    if let Err(e) = st.web.sessions.forget(&v.session.id).await {
        tracing::warn!("web: ending a session: {e}");
        return v.error(
            &st,
            StatusCode::SERVICE_UNAVAILABLE,
            "The database did not answer, so you are still signed in: please try again.",
        );
    }
    let mut resp = redirect(&format!("{}/signin", st.web.base));
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::clear_cookie(&super::cookie_path(&st)),
    );
    resp
}
