//! A request's settlement: whatever way it ends — answered, refused after
//! admission, failed, or abandoned by its client — it is settled exactly
//! once: the reservation reconciled, the fair-queue counter charged, the
//! slot freed, the metrics counted and the ledger row finalized.

use super::Admitted;
use super::Gateway;
use aula_protocol::ApiError;
use aula_store::{Finish, Outcome, RequestRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token count for the limiter and the ledger (saturating, never negative).
pub(crate) fn as_tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Everything a request holds until it is settled.
pub(crate) struct InFlight {
    pub(super) st: Arc<Gateway>,
    pub(super) queue: Arc<crate::fair::FairQueue>,
    pub(super) model: String,
    /// The model the ledger names (a fine-tuned model's own name).
    pub(super) recorded_as: String,
    pub(super) resv: Option<crate::limits::Reservation>,
    pub(super) permit: Option<crate::fair::Permit>,
    pub(super) record: Option<RequestRecord>,
    pub(super) arrived: Instant,
    pub(super) queue_ms: f64,
    pub(super) ttft: Option<Duration>,
    /// The estimate of the prompt's tokens the reservation was made with.
    pub(super) prompt_bound: u64,
    /// The request was sent to the engine (and the engine did not refuse
    /// the connection).
    pub(super) reached_engine: bool,
    pub(super) prompt_tokens: Option<u64>,
    pub(super) completion_tokens: Option<u64>,
    /// Content chunks seen (a stand-in for completion tokens without usage).
    pub(super) chunks: u64,
    pub(super) done: bool,
    /// The model is in use until this request ends (no eviction meanwhile).
    pub(super) in_use: Option<aula_fleet::lifecycle::InUse>,
}

impl InFlight {
    /// A call admitted at `arrived`, holding its reservation; its model is
    /// in use (never evicted) until it is settled.
    pub(super) fn new(
        st: &Arc<Gateway>,
        call: &Admitted,
        resv: crate::limits::Reservation,
        arrived: Instant,
    ) -> InFlight {
        InFlight {
            st: st.clone(),
            queue: call.route.queue.clone(),
            model: call.adm.model.clone(),
            recorded_as: call.recorded_as.clone(),
            resv: Some(resv),
            permit: None,
            record: None,
            arrived,
            queue_ms: 0.0,
            ttft: None,
            prompt_bound: call.adm.prompt_tokens_bound,
            reached_engine: false,
            prompt_tokens: None,
            completion_tokens: None,
            chunks: 0,
            done: false,
            in_use: st.fleet.enter(&call.adm.model),
        }
    }

    /// Settle as failed with `e`'s status; returns `e` for the client.
    pub(super) async fn fail(&mut self, e: ApiError) -> ApiError {
        // Already an error for the client, recorded or not.
        let _ = self.complete(Outcome::Error(e.status().as_u16())).await;
        e
    }

    /// Settle as `status` and wait for the ledger's final row; an error
    /// when it could not be written (the caller then withholds the end of
    /// the answer: a client never has a whole answer that is not recorded).
    pub(super) async fn complete(&mut self, status: Outcome) -> Result<(), String> {
        let Some(f) = self.settle(status) else {
            return Ok(());
        };
        self.st.ledger.finish(f).await.inspect_err(|e| {
            tracing::error!("the ledger could not finalize a request: {e}");
        })
    }

    pub(super) fn settle(&mut self, status: Outcome) -> Option<Finish> {
        if self.done {
            return None;
        }
        self.done = true;
        let completion = self
            .completion_tokens
            .or((self.chunks > 0).then_some(self.chunks));
        // The prompt as charged: reported by the engine, else its bound once
        // the engine had it (unless the engine failed).
        let charged_prompt = self
            .prompt_tokens
            .or((self.reached_engine && !status.is_error()).then_some(self.prompt_bound));
        let used = charged_prompt
            .unwrap_or(0)
            .saturating_add(completion.unwrap_or(0));
        if let Some(mut p) = self.permit.take() {
            p.charge(self.prompt_tokens, completion.unwrap_or(0));
            drop(p);
            crate::metrics::queue_gauges(&self.model, &self.queue.stats());
        }
        if let Some(r) = self.resv.take() {
            self.st.limiter.finish(&r, as_tokens(used));
        }
        let duration = self.arrived.elapsed();
        self.st.live.done(self.prompt_tokens, completion, self.ttft);
        crate::metrics::request_done(
            &self.model,
            status,
            self.prompt_tokens,
            completion,
            self.ttft,
            duration,
        );
        self.in_use = None;
        let record = self.record.take()?;
        Some(Finish {
            record,
            status,
            prompt_tokens: charged_prompt.map(as_tokens),
            completion_tokens: completion.map(as_tokens),
            queue_ms: self.queue_ms,
            ttft_ms: self.ttft.map(|t| t.as_secs_f64() * 1000.0),
            duration_ms: duration.as_secs_f64() * 1000.0,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(f) = self.settle(Outcome::Cancelled) {
            self.st.ledger.finish_detached(f);
        }
    }
}
