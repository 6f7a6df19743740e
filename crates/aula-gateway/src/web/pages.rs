//! The pages and their actions. Each handler starts with [`Visitor::of`]
//! and its role check; a student's pages query only the student's own rows.

use super::{Handle, Visitor, fields, redirect};
use crate::identity::Identity;
use crate::limits::{self, LimitFields};
use aula_protocol::admin::ModelState;
use aula_store::{Role, UsageBy, UsageRow, User};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use minijinja::context;
use serde::Serialize;
use std::collections::HashMap;

type Fields = HashMap<String, String>;

const DAY_MS: i64 = 86_400_000;

/// One token budget as the student's page shows it.
#[derive(Serialize)]
struct Budget {
    window: &'static str,
    limit: i64,
    used: i64,
    reserved: i64,
    remaining: i64,
    percent: i64,
    near: bool,
    resets: Option<i64>,
}

fn budgets(st: &Handle, id: &Identity, lim: &LimitFields) -> Vec<Budget> {
    let now = aula_store::now_ms();
    let (day, week, _) = limits::window_starts(now, st.gw.limiter.term_start_ms());
    let usage = st.gw.limiter.usage_of(&id.name).unwrap_or_default();
    [
        ("day", lim.tokens_per_day, Some(day + DAY_MS)),
        ("week", lim.tokens_per_week, Some(week + 7 * DAY_MS)),
        ("term", lim.tokens_per_term, None),
    ]
    .into_iter()
    .enumerate()
    .filter_map(|(i, (window, limit, resets))| {
        let limit = i64::try_from(limit?).unwrap_or(i64::MAX);
        let (used, reserved) = usage[i];
        let percent = if limit > 0 {
            ((used + reserved) as f64 * 100.0 / limit as f64).round() as i64
        } else {
            100
        };
        Some(Budget {
            window,
            limit,
            used,
            reserved,
            remaining: (limit - used - reserved).max(0),
            percent: percent.min(100),
            near: percent >= 80,
            resets,
        })
    })
    .collect()
}

/// `/`: the box (teachers and admins), or the student's own standing.
pub async fn overview(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/")).clone();
    if !v.staff() {
        return me(&st, &v, &id).await;
    }
    let models = st.gw.fleet.ps();
    let budget = st.gw.fleet.budget_bytes();
    let loaded = |s: &ModelState| matches!(s, ModelState::Ready | ModelState::Loading);
    let used: u64 = models
        .iter()
        .filter(|m| loaded(&m.state))
        .filter_map(|m| m.actual_bytes.or(m.planned_bytes))
        .sum();
    let known = budget != u64::MAX && budget > 0;
    let free = budget.saturating_sub(used);
    let pct = |b: u64| {
        if known {
            (b as f64 * 100.0 / budget as f64).min(100.0)
        } else {
            0.0
        }
    };
    let history = st.gw.live.history();
    let now = history.last().cloned().unwrap_or_default();
    let refused_minute: u64 = history
        .iter()
        .rev()
        .take(60)
        .flat_map(|s| s.refused.values())
        .sum();
    let queued_total: usize = now.queued.values().sum();
    let mut refusals: std::collections::BTreeMap<String, u64> = Default::default();
    for s in &history {
        for (k, n) in &s.refused {
            *refusals.entry(k.clone()).or_default() += n;
        }
    }
    let rows: Vec<_> = models
        .iter()
        .map(|m| {
            context! {
                model => m.model.clone(),
                engine => m.engine.as_str(),
                state => m.state.name(),
                reason => match &m.state { ModelState::Failed { reason } => Some(reason.clone()), _ => None },
                pinned => m.pinned,
                planned => m.planned_bytes,
                actual => m.actual_bytes,
                slots => m.slots,
                busy => m.busy,
                queued => m.queued,
                idle => m.idle_s.map(|s| format!("{s:.0} s")),
                loaded => loaded(&m.state),
            }
        })
        .collect();
    v.render(
        &st,
        StatusCode::OK,
        "overview.html",
        "home",
        context! {
            title => "The box",
            models => rows,
            budget_known => known,
            budget => budget,
            used => used,
            free => free,
            used_pct => format!("{:.1}", pct(used)),
            free_pct => format!("{:.1}", pct(free)),
            now => now,
            refused_minute => refused_minute,
            queued_total => queued_total,
            refusals => refusals,
            users => st.gw.limiter.in_flight().0,
        },
    )
}

/// A student's own standing: budgets with their resets, the other limits,
/// and usage by model this term.
async fn me(st: &Handle, v: &Visitor, id: &Identity) -> Response {
    let lim = limits::effective(&st.gw.limiter.rules(), id);
    let term = st.gw.limiter.term_start_ms();
    let usage = st
        .gw
        .store
        .usage_for(UsageBy::Model, term, Some(&id.name))
        .await
        .unwrap_or_default();
    v.render(
        st,
        StatusCode::OK,
        "me.html",
        "home",
        context! {
            title => "My usage",
            explained => limits::explain(&st.gw.limiter.rules(), id),
            budgets => budgets(st, id, &lim),
            lim => context! {
                requests_per_minute => lim.requests_per_minute,
                tokens_per_minute => lim.tokens_per_minute,
                concurrent_requests => lim.concurrent_requests,
                max_tokens => lim.max_tokens,
                models => lim.models.clone(),
            },
            models => st.gw.visible_models(id),
            usage => usage,
            groups => id.groups.clone(),
        },
    )
}

fn period_start(st: &Handle, period: &str) -> i64 {
    let (day, week, term) =
        limits::window_starts(aula_store::now_ms(), st.gw.limiter.term_start_ms());
    match period {
        "day" => day,
        "week" => week,
        _ => term,
    }
}

/// `/usage?by=user|group|model&period=day|week|term&sort=...&format=csv`:
/// everyone's for staff; a student's own, by model.
pub async fn usage(
    State(st): State<Handle>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let q = fields(q.unwrap_or_default().as_bytes());
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/usage")).clone();
    let staff = v.staff();
    let by_name = q
        .get("by")
        .map(String::as_str)
        .unwrap_or(if staff { "user" } else { "model" });
    let by: UsageBy = match by_name.parse() {
        Ok(b) if staff || b == UsageBy::Model => b,
        _ => UsageBy::Model,
    };
    let by_name = match by {
        UsageBy::User => "user",
        UsageBy::Group => "group",
        UsageBy::Model => "model",
    };
    let period = q
        .get("period")
        .map(String::as_str)
        .filter(|p| matches!(*p, "day" | "week" | "term"))
        .unwrap_or("day");
    let since = period_start(&st, period);
    let only = (!staff).then_some(id.name.as_str());
    let mut rows = match st.gw.store.usage_for(by, since, only).await {
        Ok(r) => r,
        Err(e) => {
            return v.error(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The usage records cannot be read right now: {e}"),
            );
        }
    };
    let sort = q.get("sort").map(String::as_str).unwrap_or("tokens");
    sort_rows(&mut rows, sort);
    if q.get("format").map(String::as_str) == Some("csv") {
        let csv = aula_store::tables::Usage {
            by: by_name.into(),
            rows,
        }
        .to_csv();
        let resp = (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"aula-usage-{by_name}-{period}.csv\""),
                ),
            ],
            csv,
        )
            .into_response();
        return v.finish(&st, resp);
    }
    let total = rows.iter().fold((0, 0, 0), |t, r| {
        (
            t.0 + r.requests,
            t.1 + r.prompt_tokens,
            t.2 + r.completion_tokens,
        )
    });
    v.render(
        &st,
        StatusCode::OK,
        "usage.html",
        "usage",
        context! {
            title => "Usage",
            rows => rows,
            by => by_name,
            period => period,
            sort => sort,
            since => since,
            total => context! { requests => total.0, prompt => total.1, completion => total.2 },
        },
    )
}

fn sort_rows(rows: &mut [UsageRow], sort: &str) {
    match sort {
        "key" => rows.sort_by(|a, b| a.key.cmp(&b.key)),
        "requests" => rows.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.key.cmp(&b.key))),
        "ttft" => rows.sort_by(|a, b| b.mean_ttft_ms.total_cmp(&a.mean_ttft_ms)),
        _ => rows.sort_by(|a, b| {
            (b.prompt_tokens + b.completion_tokens)
                .cmp(&(a.prompt_tokens + a.completion_tokens))
                .then(a.key.cmp(&b.key))
        }),
    }
}

/// Does `id` own this key, or may manage it (staff: students' keys; admins: all)?
async fn may_manage_key(st: &Handle, v: &Visitor, id: &Identity, key_id: &str) -> bool {
    let Ok(keys) = st.gw.store.keys(None).await else {
        return false;
    };
    let Some(k) = keys.iter().find(|k| k.id == key_id) else {
        return false;
    };
    if k.user == id.name {
        return true;
    }
    if v.admin() {
        return true;
    }
    if v.staff()
        && let Ok(Some(owner)) = st.gw.store.user(&k.user).await
    {
        return owner.role == Role::Student;
    }
    false
}

async fn keys_page(
    st: &Handle,
    v: &Visitor,
    id: &Identity,
    created: Option<(String, String)>,
    error: Option<String>,
) -> Response {
    if v.open || id.via != crate::identity::Via::Key {
        // Keys belong to Aula users; a Hub user's credential is the Hub's.
        let keys = st.gw.store.keys(Some(&id.name)).await.unwrap_or_default();
        return v.render(
            st,
            StatusCode::OK,
            "keys.html",
            "keys",
            context! { title => "My keys", keys => keys, can_create => false, hub_user => id.via == crate::identity::Via::JupyterHub },
        );
    }
    let keys = st.gw.store.keys(Some(&id.name)).await.unwrap_or_default();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    v.render(
        st,
        status,
        "keys.html",
        "keys",
        context! {
            title => "My keys",
            keys => keys,
            can_create => true,
            created_id => created.as_ref().map(|c| c.0.clone()),
            created_secret => created.map(|c| c.1),
            error => error,
        },
    )
}

/// `/fine-tuning`: the visitor's jobs (teachers and admins: everyone's)
/// and the fine-tuned models they may use. Read only: jobs are started and
/// cancelled with the API.
pub async fn fine_tuning(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/fine-tuning")).clone();
    let staff = crate::finetune::FineTune::is_staff(&id);
    let owner = (!staff).then_some(id.name.as_str());
    let jobs = st
        .gw
        .store
        .ft_jobs(owner, None, 100)
        .await
        .map(|(j, _)| j)
        .unwrap_or_default();
    let jobs: Vec<minijinja::Value> = jobs
        .iter()
        .map(|j| {
            let error_message = j
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
                .and_then(|e| e["message"].as_str().map(String::from));
            context! {
                id => j.id, owner => j.owner, base_model => j.base_model, status => j.status,
                created_ms => j.created_ms, trained_tokens => j.trained_tokens,
                fine_tuned_model => j.fine_tuned_model, deleted_ms => j.deleted_ms,
                error_message => error_message,
            }
        })
        .collect();
    let models: Vec<minijinja::Value> = st
        .finetune
        .models_for(&id)
        .into_iter()
        .map(|(name, t)| context! { name => name, base => t.base, owner => t.owner })
        .collect();
    v.render(
        &st,
        StatusCode::OK,
        "fine_tuning.html",
        "fine-tuning",
        context! {
            title => "Fine-tuning",
            jobs => jobs,
            models => models,
            enabled => st.finetune.enabled,
        },
    )
}

/// `/keys`: the visitor's own keys.
pub async fn keys(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/keys")).clone();
    keys_page(&st, &v, &id, None, None).await
}

fn expires_days(f: &Fields) -> Result<Option<f64>, String> {
    match f
        .get("expires_days")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => Ok(None),
        Some(s) => match s.parse::<f64>() {
            Ok(d) if d > 0.0 && d <= 3650.0 => Ok(Some(d)),
            _ => Err(format!(
                "“{s}” is not a number of days between 0 and 3650; leave it empty for a key that does not expire"
            )),
        },
    }
}

/// `POST /keys`: a new key of the visitor's own, shown once.
pub async fn create_key(State(st): State<Handle>, headers: HeaderMap, body: Bytes) -> Response {
    let (v, f) = page!(Visitor::post(&st, &headers, &body).await);
    let id = page!(v.require(&st, "/keys")).clone();
    if v.open || id.via != crate::identity::Via::Key {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Keys are for Aula users; sign in with an Aula key to make more.",
        );
    }
    let days = match expires_days(&f) {
        Ok(d) => d,
        Err(e) => return keys_page(&st, &v, &id, None, Some(e)).await,
    };
    match st.gw.store.create_key(&id.name, days).await {
        Ok((info, secret)) => keys_page(&st, &v, &id, Some((info.id, secret)), None).await,
        Err(e) => keys_page(&st, &v, &id, None, Some(e.to_string())).await,
    }
}

/// `POST /keys/{id}/revoke`: one's own key; staff also students' keys, admins any.
pub async fn revoke_key(
    State(st): State<Handle>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Response {
    let (v, f) = page!(Visitor::post(&st, &headers, &body).await);
    let id = page!(v.require(&st, "/keys")).clone();
    if !may_manage_key(&st, &v, &id, &key_id).await {
        // The same answer whether the key exists or not.
        return v.error(&st, StatusCode::NOT_FOUND, "You have no such key.");
    }
    if let Err(e) = st.gw.store.revoke_key(&key_id).await {
        return v.error(&st, StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let back = match f.get("back").map(String::as_str) {
        Some("users") if v.staff() => "/users",
        _ => "/keys",
    };
    v.finish(&st, redirect(&format!("{}{back}", st.web.base)))
}

async fn users_page(
    st: &Handle,
    v: &Visitor,
    created: Option<(String, String, String)>,
    error: Option<String>,
) -> Response {
    let users = st.gw.store.users().await.unwrap_or_default();
    let keys = st.gw.store.keys(None).await.unwrap_or_default();
    let rules = st.gw.limiter.rules();
    let rows: Vec<_> = users
        .iter()
        .map(|u| {
            let ident = Identity {
                name: u.name.clone(),
                role: u.role,
                groups: u.groups.clone(),
                via: crate::identity::Via::Key,
            };
            let lim = limits::effective(&rules, &ident);
            let used = st.gw.limiter.usage_of(&u.name).unwrap_or_default();
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

/// `POST /models/{model}/load|unload` (admins).
pub async fn model_action(
    State(st): State<Handle>,
    headers: HeaderMap,
    Path((model, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (v, _) = page!(Visitor::post(&st, &headers, &body).await);
    page!(v.require(&st, "/"));
    if !v.admin() {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Only an admin may load and unload models.",
        );
    }
    let done = match action.as_str() {
        "load" => st.gw.fleet.load(&model).await,
        "unload" => st.gw.fleet.unload(&model).await,
        _ => return v.error(&st, StatusCode::NOT_FOUND, "No such action."),
    };
    match done {
        Ok(()) => v.finish(&st, redirect(&format!("{}/", st.web.base))),
        Err(e) => v.error(&st, e.status(), &e.to_string()),
    }
}

/// `/playground`: chat with a model the visitor may use, streamed.
pub async fn playground(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/playground")).clone();
    let chat: Vec<String> = st
        .gw
        .visible_models(&id)
        .into_iter()
        .filter(|m| st.gw.router.get(m).is_ok_and(|r| !r.embedding))
        .collect();
    let public = st.web.settings.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        format!("http://{host}")
    });
    let stores: Vec<_> = st
        .gw
        .store
        .vector_stores_visible(&id.name, &id.groups)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|s| context! { id => s.id, name => s.name })
        .collect();
    v.render(
        &st,
        StatusCode::OK,
        "playground.html",
        "playground",
        context! {
            title => "Playground",
            stores => stores,
            models => chat,
            api_base => format!("{}/v1", public.trim_end_matches('/')),
        },
    )
}

/// The playground's caller: signed in, the CSRF header right, the body read
/// (refusals as the API's JSON errors, which the page's script shows).
async fn playground_caller(
    st: &Handle,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Identity, Bytes), Response> {
    let v = Visitor::of(st, headers).await?;
    let Some(id) = v.id.clone() else {
        return Err(aula_protocol::ApiError::Unauthorized(
            "your session has ended; sign in again".into(),
        )
        .into_response());
    };
    if v.check_post(st, headers, None).is_err() {
        return Err(aula_protocol::ApiError::Forbidden {
            message: "not sent from this site's playground".into(),
            code: "csrf",
            resets_at: None,
        }
        .into_response());
    }
    let body = crate::body::read_json(body)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((id, body))
}

/// `POST /playground/chat`: a chat completion (JSON body, CSRF header) as the
/// signed-in user, through the same pipeline as `/v1/chat/completions`.
pub async fn playground_chat(State(st): State<Handle>, headers: HeaderMap, body: Body) -> Response {
    let (id, body) = page!(playground_caller(&st, &headers, body).await);
    crate::pipeline::call(
        st.gw.clone(),
        "/v1/chat/completions",
        &id,
        body,
        std::time::Instant::now(),
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /playground/responses`: the playground searching course material
/// (`file_search` over the stores the user may search), as the signed-in
/// user, through the same `/v1/responses` path as the API.
pub async fn playground_responses(
    State(st): State<Handle>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (id, body) = page!(playground_caller(&st, &headers, body).await);
    crate::responses::respond(st.responses.clone(), &id, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/events`: the live samples (server-sent events), staff only: first the
/// last 15 minutes (`history`), then one sample a second.
pub async fn events(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    if v.id.is_none() || !v.staff() {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Only teachers and admins may see the live view.",
        );
    }
    let history = serde_json::to_string(&st.gw.live.history()).unwrap_or_else(|_| "[]".into());
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(Event::default().event("history").data(history))
    });
    let rx = st.gw.live.subscribe();
    let next = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let s = rx.borrow_and_update().clone();
        let e = Event::default()
            .event("sample")
            .data(serde_json::to_string(&*s).unwrap_or_default());
        Some((Ok(e), rx))
    });
    // Ends when the gateway starts shutting down (it would otherwise hold
    // the shutdown for its 30 s grace).
    let closing = st.gw.closing.clone().cancelled_owned();
    Sse::new(first.chain(next).take_until(closing))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `/plan`: "can I run it" — the planner as a form (teachers and admins).
/// Models are the catalog's and the GGUFs in the model directory (never a
/// path typed into the form); hardware is the planner's profiles or this
/// machine.
pub async fn plan(State(st): State<Handle>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    page!(v.require_staff(&st, "/plan"));
    let q = fields(q.unwrap_or_default().as_bytes());
    let catalog: Vec<String> = aula_planner::catalog::entries()
        .map(|e| e.into_iter().map(|e| e.id).collect())
        .unwrap_or_default();
    let dir = crate::home::models_dir();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".gguf"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let hardware: Vec<(String, String)> = aula_planner::hardware::profiles()
        .map(|p| p.into_iter().map(|h| (h.id, h.name)).collect())
        .unwrap_or_default();
    let get = |k: &str, d: &str| {
        q.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| d.to_string())
    };
    let form = context! {
        model => get("model", ""),
        hardware => get("hardware", "this"),
        engine => get("engine", "embedded"),
        precision => get("precision", ""),
        context => get("context", "4096"),
        users => get("users", "8"),
    };
    let result = if q.contains_key("model") {
        Some(plan_one(&q, &files, &dir))
    } else {
        None
    };
    let (estimate, text, error) = match result {
        Some(Ok((e, t))) => (Some(e), Some(t), None),
        Some(Err(e)) => (None, None, Some(e)),
        None => (None, None, None),
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    v.render(
        &st,
        status,
        "plan.html",
        "plan",
        context! {
            title => "Can I run it?",
            catalog => catalog,
            files => files,
            hardware_profiles => hardware,
            form => form,
            estimate => estimate,
            text => text,
            error => error,
        },
    )
}

/// One estimate from the form's fields: (what the page draws, the text `aula plan` prints).
fn plan_one(
    q: &Fields,
    files: &[String],
    dir: &std::path::Path,
) -> Result<(minijinja::Value, String), String> {
    use aula_planner::estimate::{Engine, PlanRequest, Precision};
    let model = q.get("model").map(|s| s.trim()).unwrap_or("");
    let number = |k: &str, d: u32| -> Result<u32, String> {
        match q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Ok(d),
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1_048_576).contains(n))
                .ok_or_else(|| format!("{k}: “{s}” is not a whole number from 1 to 1048576")),
        }
    };
    let context = number("context", 4096)?;
    let users = number("users", 8)?;
    let engine: Engine = q
        .get("engine")
        .map(String::as_str)
        .unwrap_or("embedded")
        .parse()?;
    let hw = match q.get("hardware").map(String::as_str) {
        None | Some("" | "this") => aula_fleet::host::detect(),
        Some(h) => aula_planner::hardware::find(h)?,
    };
    let shape = if files.iter().any(|f| f == model) {
        aula_planner::resolve_model(&dir.join(model))?
    } else {
        aula_planner::catalog::find(model)?
    };
    let precision_arg = q
        .get("precision")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let mut precision = Precision::parse(precision_arg.unwrap_or("f16"))?;
    if let (None, Some(p)) = (precision_arg, &shape.released_as) {
        precision = Precision::parse(p)?;
    }
    if shape.source.starts_with("GGUF") {
        precision.name = "gguf".into();
    }
    let request = PlanRequest {
        engine,
        precision,
        context,
        users,
        ..PlanRequest::default()
    };
    let e = aula_planner::estimate::estimate(&shape, &hw, &request);
    let m = &e.memory;
    let usable = m.usable_bytes.max(1) as f64;
    let pct = |b: u64| format!("{:.1}", (b as f64 * 100.0 / usable).min(100.0));
    let drawn = context! {
        verdict => e.verdict.reason.clone(),
        fits => m.left_bytes >= 0,
        weights => m.weights_bytes,
        kv => m.kv_cache_bytes,
        overhead => m.overhead_bytes,
        total => m.total_bytes,
        usable => m.usable_bytes,
        weights_pct => pct(m.weights_bytes),
        kv_pct => pct(m.kv_cache_bytes),
        overhead_pct => pct(m.overhead_bytes),
        kv_x => pct(m.weights_bytes),
        overhead_x => pct(m.weights_bytes + m.kv_cache_bytes),
        hardware => hw.name.clone(),
    };
    let summary = aula_planner::summary::PlanSummary {
        hardware: hw,
        estimates: vec![e],
        placement: None,
        finetune: None,
        offload: None,
        engine: q
            .get("engine")
            .cloned()
            .unwrap_or_else(|| "embedded".into()),
        context,
        users,
    };
    Ok((drawn, summary.to_text()))
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
    let usage = st
        .gw
        .store
        .usage_for(UsageBy::Model, st.gw.limiter.term_start_ms(), Some(&u.name))
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
            budgets => budgets(&st, &ident, &lim),
            usage => usage,
            keys => keys,
            manage => v.admin() || u.role == Role::Student,
        },
    )
}
