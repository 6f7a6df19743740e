//! Quotas and limits per user, group or role: requests and tokens per
//! minute, tokens per day / week / term, concurrent requests, a `max_tokens`
//! ceiling, the models allowed, and the fair-share weight.
//!
//! Which rule applies, field by field: the user's own rule; else the most
//! generous of the user's groups' rules that set the field (models: the union);
//! else the role's rule; else the rule for everyone. Token budgets are
//! reserved when a request is admitted (a bound on its prompt + `max_tokens`)
//! under one lock, and reconciled with the real usage when it ends, so many
//! concurrent requests cannot overshoot a budget by more than one reservation.
//! Days and weeks are UTC; weeks start on Monday; the term starts on
//! `[term] start` (or, without one, counts all recorded usage).
//!
//! With several gateways on one PostgreSQL the counters live in the
//! database instead (`shared`: the same limits and refusals, a budget still
//! never overshot by more than one reservation, and a gateway that cannot
//! reach the database refuses rather than counts nothing); this module
//! then only tracks its own requests in flight.
//!
//! Token arithmetic saturates and never wraps: a reservation is at least
//! zero and at most `i64::MAX` whatever `max_tokens` a client sends (the
//! gateway also refuses absurd ones before they get here), so no request can
//! make a budget look less used than it is.

use crate::identity::Identity;
use aula_protocol::ApiError;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

mod rules;
pub mod shared;

pub use rules::*;
pub use shared::Shared;

/// Tokens assumed for a request without `max_tokens` when a token budget applies.
pub const DEFAULT_RESERVED_COMPLETION: u64 = 2048;

const MINUTE_MS: i64 = 60_000;

const DAY_MS: i64 = 86_400_000;

/// A token count as the counters hold it: saturating at `i64::MAX`, never
/// wrapped negative.
fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Day,
    Week,
    Term,
}

#[derive(Debug, Default)]
struct Window {
    start_ms: i64,
    used: i64,
    reserved: i64,
}

#[derive(Debug, Default)]
struct UserUsage {
    minute_requests: VecDeque<i64>,
    /// (admitted at, tokens charged to the minute, reservation id), in
    /// admission order, so ordered by id too.
    minute_tokens: VecDeque<(i64, i64, u64)>,
    /// The sum of `minute_tokens`' charges, kept as they change.
    minute_token_sum: i64,
    windows: [Window; 3],
    active: u64,
}

/// Where the current day, week and term began (Unix ms): the windows the
/// token budgets count in.
pub fn window_starts(now_ms: i64, term_start_ms: i64) -> (i64, i64, i64) {
    (
        period_start(Period::Day, now_ms, term_start_ms),
        period_start(Period::Week, now_ms, term_start_ms),
        period_start(Period::Term, now_ms, term_start_ms),
    )
}

/// Start of the period that holds `now_ms`.
fn period_start(p: Period, now_ms: i64, term_start_ms: i64) -> i64 {
    match p {
        Period::Day => now_ms.div_euclid(DAY_MS) * DAY_MS,
        // 1970-01-01 was a Thursday: shift by 3 days so weeks start on Monday.
        Period::Week => (now_ms + 3 * DAY_MS).div_euclid(7 * DAY_MS) * 7 * DAY_MS - 3 * DAY_MS,
        Period::Term => term_start_ms,
    }
}

fn period_end(p: Period, start_ms: i64) -> Option<i64> {
    match p {
        Period::Day => Some(start_ms + DAY_MS),
        Period::Week => Some(start_ms + 7 * DAY_MS),
        Period::Term => None,
    }
}

const PERIODS: [Period; 3] = [Period::Day, Period::Week, Period::Term];

/// Usage already recorded before this gateway started, per user and period.
#[derive(Debug, Default, Clone)]
pub struct PriorUsage {
    pub day: BTreeMap<String, i64>,
    pub week: BTreeMap<String, i64>,
    pub term: BTreeMap<String, i64>,
}

pub struct Limiter {
    rules: RwLock<Arc<Vec<LimitRule>>>,
    term_start_ms: i64,
    state: Mutex<LimiterState>,
    /// The database's counters, when several gateways may share them.
    shared: std::sync::OnceLock<Arc<Shared>>,
}

struct LimiterState {
    users: HashMap<String, UserUsage>,
    prior: PriorUsage,
    next_id: u64,
}

/// What admission granted; give it back with [`Limiter::finish`].
#[derive(Debug)]
pub struct Reservation {
    pub user: String,
    pub id: u64,
    pub tokens: i64,
    pub admitted_ms: i64,
    /// `max_tokens` to send to the engine (the ceiling when the request had none).
    pub max_tokens: Option<u64>,
    pub weight: f64,
    /// The reservation in the database (shared counters).
    pub shared: Option<String>,
}

impl Limiter {
    pub fn new(rules: Vec<LimitRule>, term_start_ms: Option<i64>, prior: PriorUsage) -> Limiter {
        Limiter {
            rules: RwLock::new(Arc::new(rules)),
            term_start_ms: term_start_ms.unwrap_or(0),
            state: Mutex::new(LimiterState {
                users: HashMap::new(),
                prior,
                next_id: 0,
            }),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Count in the database from now on (before the first request).
    pub fn share(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(shared);
    }

    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.get()
    }

    pub fn term_start_ms(&self) -> i64 {
        self.term_start_ms
    }

    /// Replace the rules (run-time change); counters are kept.
    pub fn set_rules(&self, rules: Vec<LimitRule>) {
        if let Ok(mut r) = self.rules.write() {
            *r = Arc::new(rules);
        }
    }

    pub fn rules(&self) -> Arc<Vec<LimitRule>> {
        self.rules
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Check every limit for one request and reserve what it may use.
    pub fn admit(
        &self,
        id: &Identity,
        model: &str,
        prompt_tokens_bound: u64,
        max_tokens: Option<u64>,
        now_ms: i64,
    ) -> Result<Reservation, ApiError> {
        let (lim, send_max, reserve) = self.sized(id, model, prompt_tokens_bound, max_tokens)?;
        self.reserve(id, &lim, send_max, reserve, now_ms)
    }

    /// The user's limits, checked against what the request asks whatever
    /// their usage, with the `max_tokens` to send and the tokens to reserve.
    fn sized(
        &self,
        id: &Identity,
        model: &str,
        prompt_tokens_bound: u64,
        max_tokens: Option<u64>,
    ) -> Result<(LimitFields, Option<u64>, i64), ApiError> {
        let lim = effective(&self.rules(), id);
        check_request(&lim, model, max_tokens)?;
        let (send_max, reserve) = reservation_size(&lim, prompt_tokens_bound, max_tokens);
        Ok((lim, send_max, reserve))
    }

    /// [`Limiter::admit`], counted in the database when the counters are
    /// shared (refused with 503 when it cannot be reached).
    pub async fn admit_call(
        &self,
        id: &Identity,
        model: &str,
        prompt_tokens_bound: u64,
        max_tokens: Option<u64>,
        now_ms: i64,
    ) -> Result<Reservation, ApiError> {
        let Some(shared) = self.shared.get() else {
            return self.admit(id, model, prompt_tokens_bound, max_tokens, now_ms);
        };
        let (lim, send_max, reserve) = self.sized(id, model, prompt_tokens_bound, max_tokens)?;
        let held = shared
            .reserve(&id.name, &lim, reserve, self.term_start_ms, now_ms)
            .await?;
        // Counted in the database: here only this gateway's own in flight.
        let mut r = self.reserve(id, &uncounted(&lim), send_max, reserve, now_ms)?;
        r.shared = held;
        Ok(r)
    }

    /// Admit a call that uses no model (a lexical search of a store): it
    /// counts against `requests_per_minute` and `concurrent_requests` like
    /// any call; it uses no tokens, so no token limit refuses it.
    /// The reservation is given back when the returned guard is dropped.
    pub fn admit_without_model(
        &self,
        id: &Identity,
        now_ms: i64,
    ) -> Result<Admitted<'_>, ApiError> {
        let lim = LimitFields {
            tokens_per_minute: None,
            tokens_per_day: None,
            tokens_per_week: None,
            tokens_per_term: None,
            ..effective(&self.rules(), id)
        };
        let r = self.reserve(id, &lim, Some(0), 0, now_ms)?;
        Ok(Admitted(self, r))
    }

    fn reserve(
        &self,
        id: &Identity,
        lim: &LimitFields,
        send_max: Option<u64>,
        reserve: i64,
        now_ms: i64,
    ) -> Result<Reservation, ApiError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let term_start = self.term_start_ms;
        let st = &mut *st;
        let prior = &st.prior;
        let u = st
            .users
            .entry(id.name.clone())
            .or_insert_with(|| UserUsage::starting(&id.name, prior, now_ms, term_start));
        u.refresh(now_ms, term_start);
        u.check(lim, reserve, now_ms)?;
        st.next_id += 1;
        let rid = st.next_id;
        u.reserve(rid, reserve, now_ms);
        Ok(Reservation {
            user: id.name.clone(),
            id: rid,
            tokens: reserve,
            admitted_ms: now_ms,
            max_tokens: send_max,
            weight: lim.weight.filter(|w| *w > 0.0).unwrap_or(1.0),
            shared: None,
        })
    }

    /// Replace a reservation by the tokens really used.
    pub fn finish(&self, r: &Reservation, used_tokens: i64) {
        if let (Some(id), Some(shared)) = (&r.shared, self.shared.get()) {
            shared.settle(id.clone(), used_tokens.max(0));
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(u) = st.users.get_mut(&r.user) else {
            return;
        };
        u.active = u.active.saturating_sub(1);
        let used_tokens = used_tokens.max(0);
        for w in &mut u.windows {
            w.reserved = w.reserved.saturating_sub(r.tokens).max(0);
            if r.admitted_ms >= w.start_ms {
                w.used = w.used.saturating_add(used_tokens);
            }
        }
        // Still within the minute: charge what was used instead of the
        // reservation (ids are in order: a binary search, not a scan of
        // every request of the last minute).
        if let Ok(i) = u.minute_tokens.binary_search_by_key(&r.id, |t| t.2)
            && let Some(t) = u.minute_tokens.get_mut(i)
        {
            u.minute_token_sum = u
                .minute_token_sum
                .saturating_add(used_tokens.saturating_sub(t.1))
                .max(0);
            t.1 = used_tokens;
        }
    }

    /// Across all users: requests admitted and not yet finished, and the
    /// tokens they hold reserved (in the day window). Both are 0 when the
    /// gateway is idle — anything else is a leaked reservation.
    pub fn in_flight(&self) -> (u64, i64) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.users.values().fold((0, 0), |(n, t), u| {
            (n + u.active, t + u.windows[0].reserved)
        })
    }

    /// Tokens used and reserved by a user in the current day, week and
    /// term: across every gateway when the counters are shared (zeros when
    /// the database cannot be read), else [`Limiter::usage_of`].
    pub async fn usage(&self, user: &str) -> [(i64, i64); 3] {
        match self.shared.get() {
            Some(s) => s
                .usage_of(user, self.term_start_ms, aula_store::now_ms())
                .await
                .unwrap_or_default(),
            None => self.usage_of(user).unwrap_or_default(),
        }
    }

    /// Tokens used and reserved by a user in the current day, week and
    /// term, as this gateway counts them.
    pub fn usage_of(&self, user: &str) -> Option<[(i64, i64); 3]> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.users
            .get(user)
            .map(|u| std::array::from_fn(|i| (u.windows[i].used, u.windows[i].reserved)))
    }
}

/// The limits with every counter taken out (what the database counts).
fn uncounted(lim: &LimitFields) -> LimitFields {
    LimitFields {
        requests_per_minute: None,
        tokens_per_minute: None,
        tokens_per_day: None,
        tokens_per_week: None,
        tokens_per_term: None,
        concurrent_requests: None,
        ..lim.clone()
    }
}

/// What is refused whatever the user's usage: a model they may not use, a
/// `max_tokens` above their ceiling.
fn check_request(lim: &LimitFields, model: &str, max_tokens: Option<u64>) -> Result<(), ApiError> {
    if let Some(models) = &lim.models
        && !models.iter().any(|m| m == model)
    {
        return Err(ApiError::Forbidden {
            message: format!(
                "you may not use the model `{model}`; models allowed for you: {}",
                if models.is_empty() {
                    "none".to_string()
                } else {
                    models.join(", ")
                }
            ),
            code: "model_not_allowed",
            resets_at: None,
        });
    }
    if let (Some(ceiling), Some(asked)) = (lim.max_tokens, max_tokens)
        && asked > ceiling
    {
        return Err(ApiError::Forbidden {
            message: format!("max_tokens is {asked}; the most you may ask for is {ceiling}"),
            code: "max_tokens_limit",
            resets_at: None,
        });
    }
    Ok(())
}

/// A call admitted by [`Limiter::admit_without_model`], finished (no tokens
/// used) when dropped: a client that leaves gives its place back.
pub struct Admitted<'a>(&'a Limiter, Reservation);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.finish(&self.1, 0);
    }
}

/// The completion ceiling sent to the engine (None: the engine's own) and
/// the tokens reserved: the prompt bound plus that ceiling.
fn reservation_size(
    lim: &LimitFields,
    prompt_tokens_bound: u64,
    max_tokens: Option<u64>,
) -> (Option<u64>, i64) {
    let budgets = [lim.tokens_per_day, lim.tokens_per_week, lim.tokens_per_term];
    let token_limited = lim.tokens_per_minute.is_some() || budgets.iter().any(Option::is_some);
    let send_max = max_tokens.or(lim.max_tokens).or(if token_limited {
        Some(DEFAULT_RESERVED_COMPLETION)
    } else {
        None
    });
    let reserve = tokens(prompt_tokens_bound.saturating_add(send_max.unwrap_or(0)));
    (send_max, reserve)
}

impl UserUsage {
    /// A user first seen since start-up, with the usage the ledger had.
    fn starting(name: &str, prior: &PriorUsage, now_ms: i64, term_start: i64) -> UserUsage {
        let mut u = UserUsage::default();
        for (i, p) in PERIODS.iter().enumerate() {
            let prior = match p {
                Period::Day => &prior.day,
                Period::Week => &prior.week,
                Period::Term => &prior.term,
            };
            u.windows[i] = Window {
                start_ms: period_start(*p, now_ms, term_start),
                used: prior.get(name).copied().unwrap_or(0),
                reserved: 0,
            };
        }
        u
    }

    /// Roll periods over and forget what left the last minute.
    fn refresh(&mut self, now_ms: i64, term_start: i64) {
        for (i, p) in PERIODS.iter().enumerate() {
            let start = period_start(*p, now_ms, term_start);
            if self.windows[i].start_ms != start {
                self.windows[i].start_ms = start;
                self.windows[i].used = 0;
            }
        }
        while self
            .minute_requests
            .front()
            .is_some_and(|t| *t <= now_ms - MINUTE_MS)
        {
            self.minute_requests.pop_front();
        }
        while let Some(t) = self
            .minute_tokens
            .front()
            .filter(|t| t.0 <= now_ms - MINUTE_MS)
        {
            self.minute_token_sum = self.minute_token_sum.saturating_sub(t.1).max(0);
            self.minute_tokens.pop_front();
        }
    }

    /// Refuse when one more request of `reserve` tokens would pass a limit:
    /// concurrency, requests or tokens per minute, a period's quota.
    fn check(&self, lim: &LimitFields, reserve: i64, now_ms: i64) -> Result<(), ApiError> {
        let retry = |oldest: Option<i64>| -> u64 {
            oldest
                .map(|t| {
                    ((t + MINUTE_MS - now_ms).max(0) as u64)
                        .div_ceil(1000)
                        .max(1)
                })
                .unwrap_or(1)
        };
        if let Some(c) = lim.concurrent_requests
            && self.active >= c
        {
            return Err(ApiError::RateLimited {
                message: format!(
                    "you already have {} requests running or waiting; the limit is {c}",
                    self.active
                ),
                code: "concurrency_limit",
                retry_after_s: 1,
            });
        }
        if let Some(rpm) = lim.requests_per_minute
            && self.minute_requests.len() as u64 >= rpm
        {
            return Err(ApiError::RateLimited {
                message: format!("you may send {rpm} requests per minute"),
                code: "rate_limit_requests",
                retry_after_s: retry(self.minute_requests.front().copied()),
            });
        }
        if let Some(tpm) = lim.tokens_per_minute {
            let in_minute = self.minute_token_sum;
            if in_minute.saturating_add(reserve) > tokens(tpm) {
                return Err(ApiError::RateLimited {
                    message: format!(
                        "you may use {tpm} tokens per minute; {in_minute} are used or reserved and this request may need {reserve}"
                    ),
                    code: "rate_limit_tokens",
                    retry_after_s: retry(self.minute_tokens.front().map(|t| t.0)),
                });
            }
        }
        let budgets = [lim.tokens_per_day, lim.tokens_per_week, lim.tokens_per_term];
        for (i, (p, budget)) in PERIODS.iter().zip(budgets).enumerate() {
            let Some(budget) = budget else { continue };
            let w = &self.windows[i];
            if w.used.saturating_add(w.reserved).saturating_add(reserve) > tokens(budget) {
                return Err(quota_refusal(*p, w, budget, reserve));
            }
        }
        Ok(())
    }

    /// Hold one more request of `reserve` tokens.
    fn reserve(&mut self, rid: u64, reserve: i64, now_ms: i64) {
        self.active += 1;
        self.minute_requests.push_back(now_ms);
        self.minute_tokens.push_back((now_ms, reserve, rid));
        self.minute_token_sum = self.minute_token_sum.saturating_add(reserve);
        for w in &mut self.windows {
            w.reserved = w.reserved.saturating_add(reserve);
        }
    }
}

/// The refusal of a request that would pass a period's token quota.
fn quota_refusal(p: Period, w: &Window, budget: u64, reserve: i64) -> ApiError {
    let (what, code) = match p {
        Period::Day => ("today", "quota_tokens_day"),
        Period::Week => ("this week", "quota_tokens_week"),
        Period::Term => ("this term", "quota_tokens_term"),
    };
    let resets_at = period_end(p, w.start_ms).map(|ms| ms / 1000);
    ApiError::Forbidden {
        message: format!(
            "your token quota for {what} is {budget}; {} are used, {} reserved by running requests, and this request may need {reserve}{}",
            w.used,
            w.reserved,
            resets_at
                .map(|t| format!("; it resets at {t} (Unix time, UTC)"))
                .unwrap_or_default()
        ),
        code,
        resets_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Via;
    use aula_store::Role;

    fn id(name: &str, role: Role, groups: &[&str]) -> Identity {
        Identity {
            name: name.into(),
            role,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            via: Via::Key,
        }
    }

    fn rule(scope: Scope, f: LimitFields) -> LimitRule {
        LimitRule { scope, fields: f }
    }

    /// The page's "set by": the same precedence as `effective`.
    #[test]
    fn explain_names_the_rule_that_won() {
        let rules = vec![
            rule(
                Scope::Everyone,
                LimitFields {
                    tokens_per_day: Some(1000),
                    requests_per_minute: Some(10),
                    ..Default::default()
                },
            ),
            rule(
                Scope::Role(Role::Student),
                LimitFields {
                    tokens_per_day: Some(2000),
                    ..Default::default()
                },
            ),
            rule(
                Scope::Group("a".into()),
                LimitFields {
                    tokens_per_day: Some(5000),
                    ..Default::default()
                },
            ),
            rule(
                Scope::Group("b".into()),
                LimitFields {
                    tokens_per_day: Some(7000),
                    ..Default::default()
                },
            ),
            rule(
                Scope::User("eve".into()),
                LimitFields {
                    max_tokens: Some(64),
                    ..Default::default()
                },
            ),
        ];
        let find = |e: &[(&'static str, Option<String>, String)], k: &str| {
            e.iter()
                .find(|(n, _, _)| *n == k)
                .map(|(_, v, s)| (v.clone(), s.clone()))
                .unwrap()
        };
        let e = explain(&rules, &id("eve", Role::Student, &["a", "b"]));
        assert_eq!(
            find(&e, "Tokens per day"),
            (
                Some("7000".into()),
                "the most generous of the rules for the groups a, b".into()
            )
        );
        assert_eq!(
            find(&e, "Requests per minute"),
            (Some("10".into()), "the rule for everyone".into())
        );
        assert_eq!(
            find(&e, "Largest answer (max_tokens)"),
            (Some("64".into()), "the rule for the user eve".into())
        );
        assert_eq!(find(&e, "Tokens per week"), (None, "no rule".into()));
        let e = explain(&rules, &id("sam", Role::Student, &[]));
        assert_eq!(
            find(&e, "Tokens per day"),
            (Some("2000".into()), "the rule for the role student".into())
        );
    }

    #[test]
    fn precedence() {
        let rules = vec![
            rule(
                Scope::Everyone,
                LimitFields {
                    requests_per_minute: Some(10),
                    max_tokens: Some(100),
                    ..Default::default()
                },
            ),
            rule(
                Scope::Role(Role::Student),
                LimitFields {
                    requests_per_minute: Some(5),
                    ..Default::default()
                },
            ),
            rule(
                Scope::Group("a".into()),
                LimitFields {
                    requests_per_minute: Some(7),
                    models: Some(vec!["x".into()]),
                    ..Default::default()
                },
            ),
            rule(
                Scope::Group("b".into()),
                LimitFields {
                    requests_per_minute: Some(9),
                    models: Some(vec!["y".into()]),
                    ..Default::default()
                },
            ),
            rule(
                Scope::User("ada".into()),
                LimitFields {
                    requests_per_minute: Some(1),
                    ..Default::default()
                },
            ),
        ];
        let e = effective(&rules, &id("bob", Role::Student, &[]));
        assert_eq!((e.requests_per_minute, e.max_tokens), (Some(5), Some(100)));
        let e = effective(&rules, &id("bob", Role::Student, &["a", "b"]));
        assert_eq!(e.requests_per_minute, Some(9));
        assert_eq!(e.models, Some(vec!["x".to_string(), "y".to_string()]));
        assert_eq!(
            effective(&rules, &id("ada", Role::Student, &["a"])).requests_per_minute,
            Some(1)
        );
        assert_eq!(
            effective(&rules, &id("t", Role::Teacher, &[])).requests_per_minute,
            Some(10)
        );
    }

    #[test]
    fn refusals() {
        let l = Limiter::new(
            vec![rule(
                Scope::Everyone,
                LimitFields {
                    requests_per_minute: Some(2),
                    concurrent_requests: Some(5),
                    max_tokens: Some(50),
                    models: Some(vec!["m".into()]),
                    ..Default::default()
                },
            )],
            None,
            PriorUsage::default(),
        );
        let u = id("u", Role::Student, &[]);
        let code = |e: ApiError| e.body()["error"]["code"].as_str().unwrap_or("").to_string();
        assert_eq!(
            code(l.admit(&u, "other", 1, None, 0).unwrap_err()),
            "model_not_allowed"
        );
        assert_eq!(
            code(l.admit(&u, "m", 1, Some(51), 0).unwrap_err()),
            "max_tokens_limit"
        );
        let r = l.admit(&u, "m", 1, None, 0).unwrap();
        assert_eq!(r.max_tokens, Some(50));
        l.admit(&u, "m", 1, None, 10).unwrap();
        let e = l.admit(&u, "m", 1, None, 30_000).unwrap_err();
        assert_eq!(code(e.clone()), "rate_limit_requests");
        assert_eq!(e.body()["error"]["retry_after_seconds"], 30);
        assert!(l.admit(&u, "m", 1, None, 60_001).is_ok());
    }

    #[test]
    fn token_budget_reserves_and_reconciles() {
        let l = Limiter::new(
            vec![rule(
                Scope::Everyone,
                LimitFields {
                    tokens_per_day: Some(1000),
                    ..Default::default()
                },
            )],
            None,
            PriorUsage::default(),
        );
        let u = id("u", Role::Student, &[]);
        let a = l.admit(&u, "m", 100, Some(300), 5).unwrap();
        let b = l.admit(&u, "m", 100, Some(300), 5).unwrap();
        // 800 reserved: a third 400 does not fit.
        let e = l.admit(&u, "m", 100, Some(300), 5).unwrap_err();
        assert_eq!(e.body()["error"]["code"], "quota_tokens_day");
        assert_eq!(e.body()["error"]["resets_at"], 86_400);
        l.finish(&a, 50);
        l.finish(&b, 50);
        assert_eq!(l.usage_of("u").unwrap()[0], (100, 0));
        assert!(l.admit(&u, "m", 100, Some(300), 5).is_ok());
        // A new day starts from zero used (the running reservation of 400 still counts).
        assert!(l.admit(&u, "m", 100, Some(500), DAY_MS + 1).is_ok());
    }

    #[test]
    fn tokens_per_minute_reserve_reconcile_and_expire() {
        let l = Limiter::new(
            vec![rule(
                Scope::Everyone,
                LimitFields {
                    tokens_per_minute: Some(1000),
                    ..Default::default()
                },
            )],
            None,
            PriorUsage::default(),
        );
        let u = id("u", Role::Student, &[]);
        // Many small finished requests first (the minute's ledger is long).
        for t in 0..50 {
            let r = l.admit(&u, "m", 1, Some(1), t).unwrap();
            l.finish(&r, 2);
        }
        // 100 used; two reservations of 400 fit, a third does not.
        let a = l.admit(&u, "m", 100, Some(300), 100).unwrap();
        let _b = l.admit(&u, "m", 100, Some(300), 100).unwrap();
        let e = l.admit(&u, "m", 100, Some(300), 100).unwrap_err();
        assert_eq!(e.body()["error"]["code"], "rate_limit_tokens");
        // `a` used 20 of its 400: now 100 + 20 + 400 are counted, room for 400.
        l.finish(&a, 20);
        assert!(l.admit(&u, "m", 100, Some(300), 200).is_ok());
        assert!(l.admit(&u, "m", 1, Some(100), 200).is_err());
        // A minute later everything has left the window.
        assert!(l.admit(&u, "m", 100, Some(800), 60_201).is_ok());
    }

    #[test]
    fn periods() {
        // 2026-11-26 (a Thursday) 12:00 UTC; the week started Monday 2026-11-23.
        let t = 1_795_694_400_000;
        assert_eq!(period_start(Period::Day, t, 0), 1_795_651_200_000);
        assert_eq!(period_start(Period::Week, t, 0), 1_795_392_000_000);
    }

    #[test]
    fn prior_usage_counts() {
        let mut prior = PriorUsage::default();
        prior.week.insert("u".into(), 990);
        let l = Limiter::new(
            vec![rule(
                Scope::Everyone,
                LimitFields {
                    tokens_per_week: Some(1000),
                    ..Default::default()
                },
            )],
            None,
            prior,
        );
        let e = l
            .admit(&id("u", Role::Student, &[]), "m", 5, Some(10), 0)
            .unwrap_err();
        assert_eq!(e.body()["error"]["code"], "quota_tokens_week");
    }

    /// `max_tokens` of 2^63 and more once wrapped the reservation negative,
    /// and while it ran the user's budgets were ignored.
    #[test]
    fn huge_max_tokens_never_make_a_negative_reservation() {
        let budget = Limiter::new(
            vec![rule(
                Scope::Everyone,
                LimitFields {
                    tokens_per_day: Some(30),
                    ..Default::default()
                },
            )],
            None,
            PriorUsage::default(),
        );
        let u = id("u", Role::Student, &[]);
        let r = budget.admit(&u, "m", 2, Some(10), 0).unwrap();
        budget.finish(&r, 12);
        for huge in [1 << 63, u64::MAX, (1 << 63) - 2] {
            let e = budget.admit(&u, "m", 2, Some(huge), 0).unwrap_err();
            assert_eq!(e.body()["error"]["code"], "quota_tokens_day");
        }
        assert_eq!(budget.usage_of("u").unwrap()[0], (12, 0));
        // Still refused at 12 used: nothing was reserved negative.
        assert!(budget.admit(&u, "m", 2, Some(20), 0).is_err());

        // Without budgets, the reservation saturates instead of wrapping.
        let open = Limiter::new(Vec::new(), None, PriorUsage::default());
        let r = open.admit(&u, "m", 100, Some(u64::MAX), 0).unwrap();
        assert_eq!(r.tokens, i64::MAX);
        let r2 = open.admit(&u, "m", 100, Some(1 << 63), 0).unwrap();
        assert!(r2.tokens > 0);
        assert!(open.usage_of("u").unwrap().iter().all(|(_, res)| *res >= 0));
        open.finish(&r, 5);
        open.finish(&r2, 5);
        assert_eq!(open.usage_of("u").unwrap()[0], (10, 0));
    }
}
