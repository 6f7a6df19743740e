//! Which engines Aula starts are loaded, within one memory budget.
//!
//! Each model Aula starts (embedded, llama-server, vLLM, SGLang) has a
//! planned size (from the planner: weights, KV cache and buffers at its
//! context and slots, or vLLM's share of the device). Models marked
//! `preload` start with the gateway while they fit; any other model starts
//! on its first request, which waits (bounded) while other models keep
//! serving. When memory is short, idle unpinned models are evicted — never
//! one with a request running or waiting — cheapest first, by a cost that
//! weighs recent demand, how long the model takes to load, and its size.
//! A model idle past its `keep_alive` is stopped.

use crate::Queue;
use crate::backend::{HttpBackend, Upstream};
use crate::supervisor::{EngineSpec, Supervisor};
use aula_protocol::ApiError;
use aula_protocol::admin::{EngineKind, ModelState, PsRow};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod managed;
mod observe;
use managed::*;

pub struct Managed {
    pub name: String,
    /// What was added: its engines, queue, and how it is kept.
    pub member: Member,
    /// Requests between admission and their end (waiting for a load included).
    active: AtomicUsize,
    state: Mutex<ManagedState>,
    /// Bytes beyond the plan (LoRA adapters served on this base).
    extra_bytes: AtomicU64,
}

#[derive(Default)]
struct ManagedState {
    running: Option<Vec<Running>>,
    last_used: Option<Instant>,
    /// Arrival times of recent requests (the demand in the eviction cost).
    recent: VecDeque<Instant>,
    actual_bytes: Option<u64>,
    /// Where embedded engines put that memory, per llama.cpp buffer type.
    device_bytes: std::collections::BTreeMap<String, u64>,
    layers_offloaded: Option<(u32, u32)>,
    /// Why the last load failed.
    last_failure: Option<String>,
    /// The engine's /health was asked for its memory since it started.
    actual_checked: bool,
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Held by a request from admission to its end: its model is in use.
pub struct InUse(Arc<Managed>, Arc<watch::Sender<()>>);

impl Drop for InUse {
    fn drop(&mut self) {
        let was = self.0.active.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut st) = self.0.state.lock() {
            st.last_used = Some(Instant::now());
        }
        if was == 1 {
            // Idle now: a load waiting for room may evict it.
            self.1.send_replace(());
        }
    }
}

/// A model to manage: its engines (one per replica), the queue in front of
/// them, and how it is kept.
pub struct Member {
    pub engines: Vec<(EngineSpec, Arc<HttpBackend>)>,
    pub queue: Arc<dyn Queue>,
    pub pinned: bool,
    pub preload: bool,
    pub keep_alive: Option<Duration>,
    /// Planned bytes of all its engines together.
    pub planned_bytes: u64,
}

pub struct Lifecycle {
    models: HashMap<String, Arc<Managed>>,
    order: Vec<String>,
    sup: Arc<Supervisor>,
    pub budget_bytes: u64,
    pub load_timeout: Duration,
    load_lock: tokio::sync::Mutex<()>,
    /// Signalled on every change of an engine's state and whenever a model
    /// falls idle: loads wait on it instead of polling.
    changes: Arc<watch::Sender<()>>,
    /// Memory held outside the engines (fine-tuning jobs).
    reservations: Arc<Mutex<Vec<Held>>>,
    next_hold: AtomicU64,
}

/// Memory held outside the engines, as `/admin/ps` shows it.
pub use aula_protocol::admin::MemoryHold;

struct Held {
    id: u64,
    bytes: u64,
    hold: MemoryHold,
}

/// Part of the budget held for a trainer: given back when dropped.
pub struct Reservation {
    id: u64,
    holds: Arc<Mutex<Vec<Held>>>,
    changes: Arc<watch::Sender<()>>,
}

impl Reservation {
    /// Hold `bytes` from now on: a trainer's measured footprint in place of
    /// the plan's estimate. Loads that were waiting for room are woken (a
    /// smaller hold frees some); a larger one is held as it is (the
    /// trainer is already running), and later loads see it.
    pub fn set_bytes(&self, bytes: u64) {
        if let Ok(mut r) = self.holds.lock()
            && let Some(h) = r.iter_mut().find(|h| h.id == self.id)
        {
            h.bytes = bytes;
            h.hold.bytes = bytes;
        }
        self.changes.send_replace(());
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut r) = self.holds.lock() {
            r.retain(|h| h.id != self.id);
        }
        // Loads waiting for room may go now.
        self.changes.send_replace(());
    }
}

const DEMAND_WINDOW: Duration = Duration::from_secs(600);

impl Lifecycle {
    pub fn new(sup: Arc<Supervisor>, budget_bytes: u64, load_timeout: Duration) -> Lifecycle {
        Lifecycle {
            models: HashMap::new(),
            order: Vec::new(),
            sup,
            budget_bytes,
            load_timeout,
            load_lock: tokio::sync::Mutex::new(()),
            changes: Arc::new(watch::channel(()).0),
            reservations: Arc::new(Mutex::new(Vec::new())),
            next_hold: AtomicU64::new(0),
        }
    }

    /// The change signal to give each engine's backend.
    pub fn changes(&self) -> Arc<watch::Sender<()>> {
        self.changes.clone()
    }

    pub fn add(&mut self, member: Member) {
        let Some(name) = member.engines.first().map(|(s, _)| s.name.clone()) else {
            return;
        };
        self.order.push(name.clone());
        self.models.insert(
            name.clone(),
            Arc::new(Managed {
                name,
                member,
                active: AtomicUsize::new(0),
                state: Mutex::new(ManagedState::default()),
                extra_bytes: AtomicU64::new(0),
            }),
        );
    }

    fn loaded_bytes(&self) -> u64 {
        let engines: u64 = self
            .models
            .values()
            .filter(|m| m.is_running())
            .map(|m| m.planned())
            .sum();
        engines + self.reserved_bytes()
    }

    /// What the pinned models take (never evicted: no trainer gets it).
    pub fn pinned_bytes(&self) -> u64 {
        self.models
            .values()
            .filter(|m| m.member.pinned)
            .map(|m| m.planned())
            .sum()
    }

    fn reserved_bytes(&self) -> u64 {
        self.reservations
            .lock()
            .map(|r| r.iter().map(|h| h.bytes).sum())
            .unwrap_or(0)
    }

    /// Memory held outside the engines (fine-tuning jobs), as `/admin/ps` shows it.
    pub fn holds(&self) -> Vec<MemoryHold> {
        self.reservations
            .lock()
            .map(|r| r.iter().map(|h| h.hold.clone()).collect())
            .unwrap_or_default()
    }

    /// Hold `bytes` of the budget for `what` (a trainer) until the returned
    /// value is dropped: idle, unpinned models are evicted to make room, as
    /// for a load; while the only candidates are busy or pinned it waits
    /// (cancel it by dropping the future). More than the whole budget is an
    /// error at once.
    pub async fn reserve(&self, what: &str, bytes: u64) -> Result<Reservation, ApiError> {
        let room = self.budget_bytes.saturating_sub(self.pinned_bytes());
        if bytes > room {
            return Err(ApiError::Unavailable(format!(
                "{what} needs {:.2} GB, more than the {:.2} GB of the memory budget that pinned models leave",
                bytes as f64 / 1e9,
                room as f64 / 1e9
            )));
        }
        let mut changes = self.changes.subscribe();
        loop {
            {
                // Loads and reservations decide one at a time.
                let _guard = self.load_lock.lock().await;
                if self.loaded_bytes() + bytes <= self.budget_bytes {
                    let id = self.next_hold.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut r) = self.reservations.lock() {
                        r.push(Held {
                            id,
                            bytes,
                            hold: MemoryHold {
                                what: what.to_string(),
                                bytes,
                            },
                        });
                    }
                    self.changes.send_replace(());
                    return Ok(Reservation {
                        id,
                        holds: self.reservations.clone(),
                        changes: self.changes.clone(),
                    });
                }
                if let Some(v) = self.idle_victim("") {
                    tracing::info!(model = %v.name, "evicted to make room for {what}");
                    self.stop(&v.name).await?;
                    continue;
                }
            }
            // Wait for a model to fall idle or a hold to end (no deadline:
            // a queued job waits as long as it must).
            if changes.changed().await.is_err() {
                return Err(ApiError::Unavailable("the fleet is shutting down".into()));
            }
        }
    }

    /// The cheapest running, unpinned, idle model other than `except`.
    fn idle_victim(&self, except: &str) -> Option<Arc<Managed>> {
        self.models
            .values()
            .filter(|v| v.name != except && v.is_running() && !v.member.pinned)
            .filter(|v| {
                v.active.load(Ordering::SeqCst) == 0 && {
                    let q = v.member.queue.stats();
                    q.busy == 0 && q.queued == 0
                }
            })
            .min_by(|a, b| a.eviction_cost().total_cmp(&b.eviction_cost()))
            .cloned()
    }

    /// Count `bytes` more for a model from now on (its LoRA adapters).
    pub fn set_extra_bytes(&self, name: &str, bytes: u64) {
        if let Some(m) = self.models.get(name) {
            m.extra_bytes.store(bytes, Ordering::SeqCst);
        }
    }

    /// Restart a model's engines once it is idle, so that they read their
    /// files again (new adapters): a model not running is left alone (it
    /// reads them when it loads); a busy one is restarted when its last
    /// request ends; a pinned or preloaded one is loaded again at once.
    pub async fn restart_when_idle(&self, name: &str) -> Result<(), ApiError> {
        let m = self.get(name)?;
        let mut changes = self.changes.subscribe();
        loop {
            if !m.is_running() {
                return Ok(());
            }
            let idle = m.active.load(Ordering::SeqCst) == 0 && {
                let q = m.member.queue.stats();
                q.busy == 0 && q.queued == 0
            };
            if idle {
                tracing::info!(model = %name, "restarting to read its adapters again");
                self.stop(name).await?;
                if m.member.pinned || m.member.preload {
                    self.load(name).await?;
                }
                return Ok(());
            }
            if changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Start the preloaded models that fit (pinned ones first). A pinned set
    /// that can never fit is an error for start-up.
    pub fn start_preloaded(&self) -> Result<(), String> {
        let pinned: u64 = self
            .models
            .values()
            .filter(|m| m.member.pinned)
            .map(|m| m.planned())
            .sum();
        if pinned > self.budget_bytes {
            let list: Vec<String> = self
                .order
                .iter()
                .filter_map(|n| self.models.get(n))
                .filter(|m| m.member.pinned)
                .map(|m| format!("{} {:.2} GB", m.name, m.planned() as f64 / 1e9))
                .collect();
            return Err(format!(
                "the pinned models need {:.2} GB together ({}), more than the memory budget of {:.2} GB; \
                 unpin one, give them smaller contexts or fewer slots, or raise [machine] memory_gb",
                pinned as f64 / 1e9,
                list.join(", "),
                self.budget_bytes as f64 / 1e9
            ));
        }
        let mut used = 0;
        for pass_pinned in [true, false] {
            for name in &self.order {
                let Some(m) = self.models.get(name) else {
                    continue;
                };
                if m.member.pinned != pass_pinned || !(m.member.preload || m.member.pinned) {
                    continue;
                }
                if used + m.planned() <= self.budget_bytes {
                    used += m.planned();
                    self.start(m);
                } else {
                    tracing::info!(model = %m.name, "not preloaded: the memory budget is taken; it loads on its first request");
                }
            }
        }
        Ok(())
    }

    fn start(&self, m: &Arc<Managed>) {
        let Ok(mut st) = m.state.lock() else { return };
        if st.running.is_some() {
            return;
        }
        let mut running = Vec::new();
        for (spec, backend) in &m.member.engines {
            let (tx, rx) = watch::channel(false);
            backend.set(Upstream::Starting);
            let task = tokio::spawn(self.sup.clone().keep_running(
                spec.clone(),
                backend.clone(),
                rx,
            ));
            running.push(Running { stop: tx, task });
        }
        st.running = Some(running);
        st.last_used = Some(Instant::now());
        st.actual_bytes = None;
        st.device_bytes.clear();
        st.layers_offloaded = None;
        st.actual_checked = false;
        st.last_failure = None;
    }

    /// Stop a model's engine and wait until it is gone.
    pub async fn stop(&self, name: &str) -> Result<(), ApiError> {
        let m = self.get(name)?;
        let running = m.state.lock().ok().and_then(|mut st| st.running.take());
        if let Some(rs) = running {
            for r in &rs {
                let _ = r.stop.send(true);
            }
            for r in rs {
                let _ = r.task.await;
            }
            tracing::info!(model = %name, "unloaded");
        }
        for (_, b) in &m.member.engines {
            b.set(Upstream::Stopped);
        }
        Ok(())
    }

    pub async fn stop_all(&self) {
        for name in self.order.clone() {
            let _ = self.stop(&name).await;
        }
    }

    /// The engines of `name` serving now: their addresses and backends.
    pub fn ready_engines(&self, name: &str) -> Vec<(String, Arc<HttpBackend>)> {
        let Ok(m) = self.get(name) else {
            return Vec::new();
        };
        m.member
            .engines
            .iter()
            .filter_map(|(_, b)| match b.state() {
                Upstream::Ready(base) => Some((base, b.clone())),
                _ => None,
            })
            .collect()
    }

    fn get(&self, name: &str) -> Result<Arc<Managed>, ApiError> {
        self.models.get(name).cloned().ok_or_else(|| {
            ApiError::ModelNotFound(format!("`{name}` is not a model this gateway starts"))
        })
    }

    /// Mark the model in use for one request (admission to end).
    pub fn enter(&self, name: &str) -> Option<InUse> {
        let m = self.models.get(name)?.clone();
        m.active.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut st) = m.state.lock() {
            let now = Instant::now();
            st.last_used = Some(now);
            st.recent.push_back(now);
            while st
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > DEMAND_WINDOW)
                || st.recent.len() > 10_000
            {
                st.recent.pop_front();
            }
        }
        Some(InUse(m, self.changes.clone()))
    }

    /// Load the model if it is not loaded, and wait until it is ready.
    pub async fn ensure_loaded(&self, name: &str) -> Result<(), ApiError> {
        let Some(m) = self.models.get(name).cloned() else {
            return Ok(());
        };
        let deadline = Instant::now() + self.load_timeout;
        let mut changes = self.changes.subscribe();
        if !m.is_running() {
            let _guard = self.load_lock.lock().await;
            if !m.is_running() {
                self.make_room(&m, deadline).await?;
                tracing::info!(model = %name, "loading on demand");
                self.start(&m);
            }
        }
        loop {
            match m.upstream() {
                Upstream::Ready(_) => {
                    self.note_actual(&m).await;
                    return Ok(());
                }
                Upstream::Failed(why) => {
                    // Give its memory back; the next request tries again.
                    if let Ok(mut st) = m.state.lock() {
                        st.last_failure = Some(why.clone());
                    }
                    let _ = self.stop(name).await;
                    return Err(ApiError::Unavailable(format!(
                        "the model `{name}` could not be loaded: {why}"
                    )));
                }
                Upstream::Stopped if !m.is_running() => {
                    // Unloaded while we waited: a failed load, or an unload.
                    let why = m
                        .state
                        .lock()
                        .ok()
                        .and_then(|s| s.last_failure.clone())
                        .unwrap_or_else(|| "it was unloaded while loading".into());
                    return Err(ApiError::Unavailable(format!(
                        "the model `{name}` could not be loaded: {why}"
                    )));
                }
                Upstream::Starting | Upstream::Stopped => {}
            }
            if !wait_change(&mut changes, deadline).await {
                return Err(ApiError::Unavailable(format!(
                    "the model `{name}` did not finish loading within {}s; try again shortly",
                    self.load_timeout.as_secs()
                )));
            }
        }
    }

    /// Evict idle, unpinned models until `m` fits; wait (until `deadline`)
    /// while the only candidates are busy.
    async fn make_room(&self, m: &Arc<Managed>, deadline: Instant) -> Result<(), ApiError> {
        if m.planned() > self.budget_bytes {
            return Err(ApiError::Unavailable(format!(
                "the model `{}` needs {:.2} GB (planned), more than the whole memory budget of {:.2} GB",
                m.name,
                m.planned() as f64 / 1e9,
                self.budget_bytes as f64 / 1e9
            )));
        }
        let mut changes = self.changes.subscribe();
        loop {
            let loaded = self.loaded_bytes();
            if loaded + m.planned() <= self.budget_bytes {
                return Ok(());
            }
            let victim = self.idle_victim(&m.name);
            match victim {
                Some(v) => {
                    tracing::info!(model = %v.name, "evicted to make room for {}", m.name);
                    self.stop(&v.name).await?;
                }
                None => {
                    if !wait_change(&mut changes, deadline).await {
                        let busy: Vec<String> = self
                            .models
                            .values()
                            .filter(|v| v.is_running())
                            .map(|v| v.name.clone())
                            .collect();
                        return Err(ApiError::Unavailable(format!(
                            "not enough memory to load `{}` ({:.2} GB planned; {:.2} GB of {:.2} GB in use by {}, all busy or pinned); try again later",
                            m.name,
                            m.planned() as f64 / 1e9,
                            loaded as f64 / 1e9,
                            self.budget_bytes as f64 / 1e9,
                            busy.join(", ")
                        )));
                    }
                }
            }
        }
    }

    /// Stop models idle past their keep_alive.
    pub async fn reap_idle(&self) {
        let now = Instant::now();
        let idle: Vec<String> = self
            .models
            .values()
            .filter(|m| m.is_running() && !m.member.pinned && m.active.load(Ordering::SeqCst) == 0)
            .filter(|m| {
                let q = m.member.queue.stats();
                q.busy == 0 && q.queued == 0
            })
            .filter(|m| {
                let last = m.state.lock().ok().and_then(|s| s.last_used);
                matches!((m.member.keep_alive, last), (Some(k), Some(t)) if now.duration_since(t) > k)
            })
            .map(|m| m.name.clone())
            .collect();
        for name in idle {
            tracing::info!(model = %name, "idle past its keep_alive: unloading");
            let _ = self.stop(&name).await;
        }
    }

    pub async fn load(&self, name: &str) -> Result<(), ApiError> {
        let _in_use = self.enter(name);
        self.get(name)?;
        self.ensure_loaded(name).await
    }
}

/// Wait for the next change, until `deadline`; false when it passed.
async fn wait_change(changes: &mut watch::Receiver<()>, deadline: Instant) -> bool {
    let deadline = tokio::time::Instant::from_std(deadline);
    // A closed channel cannot be: the lifecycle holds the sender.
    matches!(
        tokio::time::timeout_at(deadline, changes.changed()).await,
        Ok(Ok(()))
    )
}
#[cfg(test)]
mod layer_tests {
    use super::fewest_offloaded;

    #[test]
    fn replicas_layers_are_not_summed() {
        let one = fewest_offloaded(None, (29, 29));
        assert_eq!(fewest_offloaded(Some(one), (29, 29)), (29, 29));
        assert_eq!(fewest_offloaded(Some(one), (12, 29)), (12, 29));
        assert_eq!(fewest_offloaded(Some((12, 29)), (29, 29)), (12, 29));
    }
}
