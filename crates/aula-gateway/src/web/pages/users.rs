//! `/users`: users, adding them, their keys, and one user's page (teachers and admins).

use super::super::{Handle, Visitor, redirect};
use super::*;
use crate::identity::Identity;
use crate::limits::{self};
use aula_store::{Role, UsageBy, User};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use minijinja::context;

async fn users_page(
    st: &Handle,
    v: &Visitor,
    created: Option<(String, String, String)>,
    error: Option<String>,
) -> Response {
    let users = st.gw.store.users().await.unwrap_or_default();
    let keys = st.gw.store.keys(None).await.unwrap_or_default();
    let rules = st.gw.limiter.rules();
    let mut used = Vec::with_capacity(users.len());
    for u in &users {
        used.push(st.gw.limiter.usage(&u.name).await);
    }
    let rows: Vec<_> = users
        .iter()
        .zip(used)
        .map(|(u, used)| {
            let ident = Identity {
                name: u.name.clone(),
                role: u.role,
                groups: u.groups.clone(),
                via: crate::identity::Via::Key,
            };
            let lim = limits::effective(&rules, &ident);
            context! {
                name => u.name.clone(),
                role => u.role.as_str(),
                groups => u.groups.join(", "),
                keys => keys.iter().filter(|k| k.user == u.name && k.revoked_ms.is_none()).count(),
                today => used[0].0,
                term => used[2].0,
                per_day => lim.tokens_per_day,
                per_term => lim.tokens_per_term,
                rpm => lim.requests_per_minute,
                manage => v.admin() || u.role == Role::Student,
            }
        })
        .collect();
    let live_keys: Vec<_> = keys.iter().filter(|k| k.revoked_ms.is_none()).collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    v.render(
        st,
        status,
        "users.html",
        "users",
        context! {
            title => "Users and keys",
            users => rows,
            keys => live_keys,
            created_user => created.as_ref().map(|c| c.0.clone()),
            created_id => created.as_ref().map(|c| c.1.clone()),
            created_secret => created.map(|c| c.2),
            error => error,
            roles => if v.admin() { vec!["student", "teacher", "admin"] } else { vec!["student"] },
        },
    )
}

/// `/users` (teachers and admins).
pub async fn users(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    page!(v.require_staff(&st, "/users"));
    if v.open {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "There are no users: this gateway runs without authentication. Add the first admin with `aula users add NAME --role admin`.",
        );
    }
    users_page(&st, &v, None, None).await
}

/// `POST /users`: add a user (teachers add students; admins anyone).
pub async fn add_user(State(st): State<Handle>, headers: HeaderMap, body: Bytes) -> Response {
    let (v, f) = page!(Visitor::post(&st, &headers, &body).await);
    page!(v.require_staff(&st, "/users"));
    if v.open {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Add the first admin with `aula users add NAME --role admin`.",
        );
    }
    let role: Role = match f
        .get("role")
        .map(String::as_str)
        .unwrap_or("student")
        .parse()
    {
        Ok(r) => r,
        Err(e) => return users_page(&st, &v, None, Some(e.to_string())).await,
    };
    if role != Role::Student && !v.admin() {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Only an admin may add teachers and admins.",
        );
    }
    let name = f
        .get("name")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let groups: Vec<String> = f
        .get("groups")
        .map(|g| {
            g.split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let user = User {
        name: name.clone(),
        role,
        groups,
    };
    if let Err(e) = st.gw.store.put_user(&user, false).await {
        return users_page(&st, &v, None, Some(e.to_string())).await;
    }
    if f.contains_key("with_key") {
        return match st.gw.store.create_key(&name, None).await {
            Ok((k, secret)) => users_page(&st, &v, Some((name, k.id, secret)), None).await,
            Err(e) => users_page(&st, &v, None, Some(e.to_string())).await,
        };
    }
    v.finish(&st, redirect(&format!("{}/users", st.web.base)))
}

/// `POST /users/{name}/keys`: a key for a user (staff: students; admins: anyone).
pub async fn create_user_key(
    State(st): State<Handle>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let (v, f) = page!(Visitor::post(&st, &headers, &body).await);
    page!(v.require_staff(&st, "/users"));
    let user = match st.gw.store.user(&name).await {
        Ok(Some(u)) => u,
        _ => return v.error(&st, StatusCode::NOT_FOUND, "There is no such user."),
    };
    if user.role != Role::Student && !v.admin() {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Only an admin may make keys for teachers and admins.",
        );
    }
    let days = match expires_days(&f) {
        Ok(d) => d,
        Err(e) => return users_page(&st, &v, None, Some(e)).await,
    };
    match st.gw.store.create_key(&name, days).await {
        Ok((k, secret)) => users_page(&st, &v, Some((name, k.id, secret)), None).await,
        Err(e) => users_page(&st, &v, None, Some(e.to_string())).await,
    }
}

/// `/users/{name}`: one user's limits (and which rule set each), budgets,
/// usage by model this term and keys (teachers and admins).
pub async fn user(
    State(st): State<Handle>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    page!(v.require_staff(&st, "/users"));
    let u = match st.gw.store.user(&name).await {
        Ok(Some(u)) => u,
        _ => return v.error(&st, StatusCode::NOT_FOUND, "There is no such user."),
    };
    let ident = Identity {
        name: u.name.clone(),
        role: u.role,
        groups: u.groups.clone(),
        via: crate::identity::Via::Key,
    };
    let rules = st.gw.limiter.rules();
    let lim = limits::effective(&rules, &ident);
    let budgets = budgets(&st, &ident, &lim).await;
    let usage = usage_for(
        &st,
        UsageBy::Model,
        st.gw.limiter.term_start_ms(),
        Some(&u.name),
    )
    .await
    .unwrap_or_default();
    let keys = st.gw.store.keys(Some(&u.name)).await.unwrap_or_default();
    v.render(
        &st,
        StatusCode::OK,
        "user.html",
        "users",
        context! {
            title => format!("{} ({})", u.name, u.role.as_str()),
            user => u.name.clone(),
            groups => u.groups.join(", "),
            explained => limits::explain(&rules, &ident),
            budgets => budgets,
            usage => usage,
            keys => keys,
            manage => v.admin() || u.role == Role::Student,
        },
    )
}
