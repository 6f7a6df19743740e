//! [`Gateway`]: the request path's handle — the services one call passes
//! through (authentication, limits, the fair queues behind the router, the
//! ledger, the fleet) and the records they keep. Every feature that calls a
//! model on a user's behalf holds one: Responses and ingestion make typed
//! calls (`chat`, `chat_stream`, `embed`, `tokenize` in `calls.rs`), the
//! playground passes the browser's request on as the API would; none of
//! them reaches the server.

use crate::auth::Authenticator;
use crate::identity::Identity;
use crate::limits::{LimitRule, Limiter};
use crate::router::ModelRouter;
use aula_store::Ledger;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Re-reads the limits from the configuration file (run-time changes).
pub type Reload = Box<dyn Fn() -> Result<Vec<LimitRule>, String> + Send + Sync>;

pub struct Gateway {
    pub router: ModelRouter,
    pub auth: Authenticator,
    pub limiter: Limiter,
    pub ledger: Ledger,
    pub reload: Option<Reload>,
    pub fleet: Arc<aula_fleet::Fleet>,
    pub store: aula_store::Store,
    /// The last 15 minutes, second by second, for the web page.
    pub live: crate::live::Live,
    /// Fine-tuned models served on their bases' engines.
    pub tuned: Arc<crate::tuned::TunedModels>,
    /// Cancelled when the gateway starts shutting down: endless responses
    /// (the web page's live stream) end then, so that shutdown does not wait
    /// for them.
    pub closing: tokio_util::sync::CancellationToken,
    /// Whether this gateway schedules the engines (or is a standby).
    pub scheduling: Arc<crate::scheduling::Scheduling>,
}

impl Gateway {
    /// Apply the limits in the configuration file again.
    pub fn reload_limits(&self) -> Result<usize, String> {
        let Some(reload) = &self.reload else {
            return Err("this gateway has no configuration file to reload".into());
        };
        let rules = reload()?;
        let n = rules.len();
        self.limiter.set_rules(rules);
        Ok(n)
    }

    /// The models `id` may use (the `/v1/models` list), by configured name
    /// and alias.
    pub fn visible_models(&self, id: &Identity) -> Vec<String> {
        let allowed = crate::limits::effective(&self.limiter.rules(), id).models;
        self.router
            .all_names()
            .into_iter()
            .filter(|n| {
                let canonical = self
                    .router
                    .get(n)
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                allowed.as_ref().is_none_or(|a| a.contains(&canonical))
            })
            .collect()
    }

    /// The live view's sampler: one sample a second until the gateway stops.
    pub async fn sample_live(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut queued = BTreeMap::new();
            let mut busy = BTreeMap::new();
            for (name, r) in self.router.iter() {
                let q = r.queue.stats();
                queued.insert(name.clone(), q.queued);
                busy.insert(name.clone(), q.busy);
            }
            let (in_flight, _) = self.limiter.in_flight();
            self.live
                .sample(aula_store::now_ms(), in_flight, queued, busy);
        }
    }
}
