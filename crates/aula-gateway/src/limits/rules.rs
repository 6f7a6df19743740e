//! The limits as configured: the fields a `[[limits]]` entry may set, who
//! it applies to, and the one rule that picks each field for a user
//! (`effective`, and `explain`, which says which entry set it).

use crate::identity::Identity;
use aula_store::Role;
use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitFields {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_week: Option<u64>,
    pub tokens_per_term: Option<u64>,
    pub concurrent_requests: Option<u64>,
    pub max_tokens: Option<u64>,
    pub models: Option<Vec<String>>,
    /// Share of the machine relative to others (default 1): a weight of 4
    /// is served as if each of its tokens cost a quarter.
    pub weight: Option<f64>,
    /// The largest file one upload may be, in MB (default [`DEFAULT_MAX_FILE_MB`]).
    pub max_file_mb: Option<u64>,
    /// What a user's uploaded files may take together, in MB (default
    /// [`DEFAULT_FILE_STORAGE_MB`]).
    pub file_storage_mb: Option<u64>,
    /// Fine-tuning jobs a user may have waiting or training at once
    /// (default [`DEFAULT_FT_JOBS_AT_ONCE`]).
    pub fine_tuning_jobs_at_once: Option<u64>,
    /// Fine-tuning jobs a user may create per day (default [`DEFAULT_FT_JOBS_PER_DAY`]).
    pub fine_tuning_jobs_per_day: Option<u64>,
    /// Tokens a user's fine-tuning jobs may train per term (default
    /// [`DEFAULT_FT_TOKENS_PER_TERM`]).
    pub fine_tuning_tokens_per_term: Option<u64>,
}

/// Fine-tuning jobs at once per user when no rule says.
pub const DEFAULT_FT_JOBS_AT_ONCE: u64 = 1;

/// Fine-tuning jobs per user per day when no rule says.
pub const DEFAULT_FT_JOBS_PER_DAY: u64 = 5;

/// Tokens a user's fine-tuning jobs may train per term when no rule says
/// (a few small jobs; a rule raises it for a class that needs more).
pub const DEFAULT_FT_TOKENS_PER_TERM: u64 = 50_000_000;

/// The largest upload when no rule sets `max_file_mb`.
pub const DEFAULT_MAX_FILE_MB: u64 = 512;

/// A user's file storage when no rule sets `file_storage_mb`.
pub const DEFAULT_FILE_STORAGE_MB: u64 = 2048;

#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Everyone,
    Role(Role),
    Group(String),
    User(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitRule {
    pub scope: Scope,
    pub fields: LimitFields,
}

pub(super) fn pick<T: Clone>(
    rules: &[&LimitRule],
    id: &Identity,
    get: impl Fn(&LimitFields) -> Option<T>,
    most_generous: impl Fn(T, T) -> T,
) -> Option<T> {
    let user = rules
        .iter()
        .filter(|r| r.scope == Scope::User(id.name.clone()))
        .find_map(|r| get(&r.fields));
    if user.is_some() {
        return user;
    }
    let group = rules
        .iter()
        .filter(|r| matches!(&r.scope, Scope::Group(g) if id.groups.contains(g)))
        .filter_map(|r| get(&r.fields))
        .reduce(&most_generous);
    if group.is_some() {
        return group;
    }
    let role = rules
        .iter()
        .filter(|r| r.scope == Scope::Role(id.role))
        .find_map(|r| get(&r.fields));
    if role.is_some() {
        return role;
    }
    rules
        .iter()
        .filter(|r| r.scope == Scope::Everyone)
        .find_map(|r| get(&r.fields))
}

/// Which rule sets each limit for `id`, by the same precedence as
/// [`effective`] (user, then groups — the most generous —, then role, then
/// everyone): (limit, value or `None` for unlimited, where it comes from).
pub fn explain(rules: &[LimitRule], id: &Identity) -> Vec<(&'static str, Option<String>, String)> {
    let eff = effective(rules, id);
    let from = |has: &dyn Fn(&LimitFields) -> bool| -> String {
        if rules
            .iter()
            .any(|r| r.scope == Scope::User(id.name.clone()) && has(&r.fields))
        {
            return format!("the rule for the user {}", id.name);
        }
        let groups: Vec<&str> = rules
            .iter()
            .filter_map(|r| match &r.scope {
                Scope::Group(g) if id.groups.contains(g) && has(&r.fields) => Some(g.as_str()),
                _ => None,
            })
            .collect();
        match groups.as_slice() {
            [] => {}
            [g] => return format!("the rule for the group {g}"),
            _ => {
                return format!(
                    "the most generous of the rules for the groups {}",
                    groups.join(", ")
                );
            }
        }
        if rules
            .iter()
            .any(|r| r.scope == Scope::Role(id.role) && has(&r.fields))
        {
            return format!("the rule for the role {}", id.role.as_str());
        }
        if rules
            .iter()
            .any(|r| r.scope == Scope::Everyone && has(&r.fields))
        {
            return "the rule for everyone".into();
        }
        "no rule".into()
    };
    let n = |v: Option<u64>| v.map(|v| v.to_string());
    vec![
        (
            "Tokens per day",
            n(eff.tokens_per_day),
            from(&|f| f.tokens_per_day.is_some()),
        ),
        (
            "Tokens per week",
            n(eff.tokens_per_week),
            from(&|f| f.tokens_per_week.is_some()),
        ),
        (
            "Tokens per term",
            n(eff.tokens_per_term),
            from(&|f| f.tokens_per_term.is_some()),
        ),
        (
            "Tokens per minute",
            n(eff.tokens_per_minute),
            from(&|f| f.tokens_per_minute.is_some()),
        ),
        (
            "Requests per minute",
            n(eff.requests_per_minute),
            from(&|f| f.requests_per_minute.is_some()),
        ),
        (
            "Requests at once",
            n(eff.concurrent_requests),
            from(&|f| f.concurrent_requests.is_some()),
        ),
        (
            "Largest answer (max_tokens)",
            n(eff.max_tokens),
            from(&|f| f.max_tokens.is_some()),
        ),
        (
            "Models",
            eff.models.map(|m| {
                if m.is_empty() {
                    "none".into()
                } else {
                    m.join(", ")
                }
            }),
            from(&|f| f.models.is_some()),
        ),
        (
            "Share of the machine (weight)",
            eff.weight.map(|w| w.to_string()),
            from(&|f| f.weight.is_some()),
        ),
    ]
}

/// The limits that apply to one identity.
pub fn effective(rules: &[LimitRule], id: &Identity) -> LimitFields {
    let rules: Vec<&LimitRule> = rules.iter().collect();
    let max = |a: u64, b: u64| a.max(b);
    LimitFields {
        requests_per_minute: pick(&rules, id, |f| f.requests_per_minute, max),
        tokens_per_minute: pick(&rules, id, |f| f.tokens_per_minute, max),
        tokens_per_day: pick(&rules, id, |f| f.tokens_per_day, max),
        tokens_per_week: pick(&rules, id, |f| f.tokens_per_week, max),
        tokens_per_term: pick(&rules, id, |f| f.tokens_per_term, max),
        concurrent_requests: pick(&rules, id, |f| f.concurrent_requests, max),
        max_tokens: pick(&rules, id, |f| f.max_tokens, max),
        models: pick(
            &rules,
            id,
            |f| f.models.clone(),
            |mut a, b| {
                for m in b {
                    if !a.contains(&m) {
                        a.push(m);
                    }
                }
                a
            },
        ),
        weight: pick(&rules, id, |f| f.weight, f64::max),
        max_file_mb: pick(&rules, id, |f| f.max_file_mb, max),
        file_storage_mb: pick(&rules, id, |f| f.file_storage_mb, max),
        fine_tuning_jobs_at_once: pick(&rules, id, |f| f.fine_tuning_jobs_at_once, max),
        fine_tuning_jobs_per_day: pick(&rules, id, |f| f.fine_tuning_jobs_per_day, max),
        fine_tuning_tokens_per_term: pick(&rules, id, |f| f.fine_tuning_tokens_per_term, max),
    }
}
