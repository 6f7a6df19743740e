//! One owner for every background task and for shutdown. Loops are spawned
//! through [`Tasks`], which stops them all at once: on shutdown the token is
//! cancelled, each loop ends at its next await, and [`Tasks::shutdown`]
//! waits (bounded) until every one has.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Run `task` until it ends or shutdown begins, whichever is first.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => tracing::debug!("{name}: stopped"),
                _ = task => {}
            }
        });
    }

    /// Begin shutdown: every task is told to stop; wait up to `grace` for them.
    pub async fn shutdown(&self, grace: Duration) {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} background tasks did not stop in time",
                self.tracker.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_every_loop() {
        let tasks = Tasks::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        for _ in 0..3 {
            let tx = tx.clone();
            tasks.spawn("forever", async move {
                let _held = tx;
                std::future::pending::<()>().await
            });
        }
        drop(tx);
        tasks.shutdown(Duration::from_secs(5)).await;
        // Every loop has ended, so every sender is dropped.
        assert!(rx.recv().await.is_none());
    }
}
