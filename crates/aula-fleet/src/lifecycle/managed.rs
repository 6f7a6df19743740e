//! One managed model's own view: its planned bytes, kind, state, upstream,
//! load time and what evicting it would cost.

use super::*;

impl Managed {
    /// Planned bytes with what was added since (adapters).
    pub(super) fn planned(&self) -> u64 {
        self.member.planned_bytes + self.extra_bytes.load(Ordering::SeqCst)
    }

    pub(super) fn kind(&self) -> EngineKind {
        self.member
            .engines
            .first()
            .map(|(s, _)| s.kind)
            .unwrap_or(EngineKind::Embedded)
    }

    /// The model's state as the admin API shows it.
    pub(super) fn state(&self) -> ModelState {
        match self.upstream() {
            Upstream::Ready(_) => ModelState::Ready,
            Upstream::Starting => ModelState::Loading,
            Upstream::Failed(reason) => ModelState::Failed { reason },
            Upstream::Stopped => ModelState::Unloaded,
        }
    }

    /// The model's state across its replicas: ready when one is.
    pub(super) fn upstream(&self) -> Upstream {
        let states: Vec<Upstream> = self.member.engines.iter().map(|(_, b)| b.state()).collect();
        if let Some(r) = states.iter().find(|s| matches!(s, Upstream::Ready(_))) {
            return r.clone();
        }
        if !states.is_empty() && states.iter().all(|s| matches!(s, Upstream::Failed(_))) {
            return states[0].clone();
        }
        if states
            .iter()
            .any(|s| matches!(s, Upstream::Starting | Upstream::Failed(_)))
        {
            return Upstream::Starting;
        }
        Upstream::Stopped
    }

    pub(super) fn load_time(&self) -> Option<Duration> {
        self.member
            .engines
            .iter()
            .filter_map(|(_, b)| b.load_time())
            .max()
    }

    pub(super) fn is_running(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.running.is_some())
            .unwrap_or(false)
    }

    /// Lower is cheaper to evict: (requests in the last 10 minutes + 1) x
    /// seconds to load again / GB freed.
    pub(super) fn eviction_cost(&self) -> f64 {
        let demand = self.state.lock().map(|s| s.recent.len()).unwrap_or(0) as f64;
        let load = self
            .load_time()
            .map(|d| d.as_secs_f64())
            .unwrap_or(1.0)
            .max(0.1);
        let gb = (self.planned() as f64 / 1e9).max(0.001);
        (demand + 1.0) * load / gb
    }
}

/// Layers offloaded per engine, not summed: replicas load the same model
/// ("29/29" each), so a model shows the fewest any of its engines has.
pub(super) fn fewest_offloaded(acc: Option<(u32, u32)>, engine: (u32, u32)) -> (u32, u32) {
    match acc {
        Some((a, of)) => (a.min(engine.0), of.max(engine.1)),
        None => engine,
    }
}
