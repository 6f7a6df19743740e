//! Who schedules the engines when several gateways share a PostgreSQL.
//!
//! The rules:
//! - By default one gateway schedules: the holder of the database's
//!   advisory lock (`aula_store::leader`), tried every [`TICK`]. The others
//!   are standbys: `/readyz` says `"role": "standby"` with a 503, so a load
//!   balancer sends the traffic to the leader, and a client's model request
//!   that reaches a standby anyway is refused with 503 `standby_gateway`
//!   and `Retry-After: 1`, before anything is counted or queued. So one
//!   fair queue orders every request for the engines.
//! - When the leader dies a standby takes the lock at its next tick;
//!   requests queued at the dead leader end with it (their clients see the
//!   connection close, never a hang) and are sent again.
//! - Calls a gateway makes itself (a vector store's embeddings) run where
//!   they start, standby or not.
//! - With `[server] one_scheduler = false` (users hashed to gateways by the
//!   load balancer, each gateway with its own engines or slots), every
//!   gateway schedules its own requests; budgets stay exact either way (they
//!   are counted in the database).
//! - On SQLite there is one gateway: it schedules.

use aula_protocol::ApiError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a standby tries to take the lead, and a leader touches its lock.
pub const TICK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Scheduling {
    /// Elected: the gateway schedules only while it holds the lock.
    elected: bool,
    leads: AtomicBool,
}

impl Scheduling {
    /// This gateway schedules whatever the others do.
    pub fn alone() -> Scheduling {
        Scheduling {
            elected: false,
            leads: AtomicBool::new(true),
        }
    }

    /// This gateway schedules while it holds the lock.
    pub fn elected() -> Scheduling {
        Scheduling {
            elected: true,
            leads: AtomicBool::new(false),
        }
    }

    pub fn schedules(&self) -> bool {
        !self.elected || self.leads.load(Ordering::Relaxed)
    }

    /// `leader`, `standby`, or None when there is no election.
    pub fn role(&self) -> Option<&'static str> {
        self.elected.then(|| {
            if self.schedules() {
                "leader"
            } else {
                "standby"
            }
        })
    }

    /// Refuse a client's model request on a standby.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.schedules() {
            Ok(())
        } else {
            Err(ApiError::Standby(
                "this gateway is a standby: another gateway schedules the models; send the request to it (or again: a load balancer does)".into(),
            ))
        }
    }

    fn set(&self, leads: bool) {
        if self.leads.swap(leads, Ordering::Relaxed) != leads {
            if leads {
                tracing::info!("this gateway now schedules the models (leader)");
            } else {
                tracing::warn!("this gateway no longer schedules the models (standby)");
            }
        }
    }

    /// One tick of the election (also the first, before serving).
    pub async fn tick(&self, store: &aula_store::Store, c: &mut aula_store::leader::Candidate) {
        match aula_store::db::within(store.lead(c)).await {
            Ok(leads) => self.set(leads),
            Err(e) => {
                tracing::warn!("the election could not reach the database: {e}");
                c.reset();
                self.set(false);
            }
        }
    }
}

/// Hold or seek the lead until the task is stopped (dropping the lock's
/// connection gives the lead up).
pub async fn run(
    store: aula_store::Store,
    me: std::sync::Arc<Scheduling>,
    mut c: aula_store::leader::Candidate,
) {
    loop {
        tokio::time::sleep(TICK).await;
        me.tick(&store, &mut c).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standbys_refuse_and_say_so() {
        let a = Scheduling::alone();
        assert!(a.schedules() && a.check().is_ok() && a.role().is_none());
        let e = Scheduling::elected();
        assert_eq!(e.role(), Some("standby"));
        let err = e.check().unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.code()),
            (503, Some("standby_gateway"))
        );
        e.set(true);
        assert_eq!(e.role(), Some("leader"));
        assert!(e.check().is_ok());
    }
}
