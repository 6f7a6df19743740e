//! Fine-tuning jobs, their events and checkpoints. A job's status only
//! moves forward (`validating_files` → `queued` → `running` → `succeeded` |
//! `failed` | `cancelled`; a restarted gateway puts `running` back to
//! `queued`): every change names the status it expects, so a cancel and the
//! trainer's end cannot both win.

use crate::db::{Store, StoreError};
use sqlx::Row;

/// A job's status, stored and answered by these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    ValidatingFiles,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::ValidatingFiles,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
    /// Not finished: waiting, or training.
    pub const UNFINISHED: [JobStatus; 3] = [
        JobStatus::ValidatingFiles,
        JobStatus::Queued,
        JobStatus::Running,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::ValidatingFiles => "validating_files",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|j| j.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        !JobStatus::UNFINISHED.contains(&self)
    }

    /// The one list of the moves a job may make. Forward only, except that
    /// a training job is put back in the queue when the gateway stops; a
    /// running job's progress and a succeeded job's model (deleted) are
    /// written without a move.
    pub fn may_move(from: JobStatus, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (from, to),
            (ValidatingFiles, Queued)
                | (Queued, Running)
                | (Running, Queued)
                | (Running, Running)
                | (Running, Succeeded)
                | (Succeeded, Succeeded)
                | (ValidatingFiles | Queued | Running, Failed | Cancelled)
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fine-tuning job as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FineTuneJob {
    pub id: String,
    pub owner: String,
    pub owner_role: crate::Role,
    pub status: JobStatus,
    pub base_model: String,
    pub fine_tuned_model: Option<String>,
    /// What was asked, as JSON.
    pub spec: String,
    /// The failure, as JSON (`{code, message, param}`).
    pub error: Option<String>,
    pub trained_tokens: i64,
    /// The memory the job holds while it trains (the planner's estimate).
    pub planned_bytes: i64,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub estimated_finish_ms: Option<i64>,
    /// Groups the resulting model is shared with (JSON list).
    pub shared_groups: String,
    pub deleted_ms: Option<i64>,
}

/// One event of a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FineTuneEvent {
    pub seq: i64,
    pub created_ms: i64,
    pub level: String,
    pub kind: String,
    pub message: String,
    pub data: Option<String>,
}

/// One checkpoint of a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FineTuneCheckpoint {
    pub id: String,
    pub job_id: String,
    pub step: i64,
    pub metrics: String,
    pub created_ms: i64,
}

const COLUMNS: &str = "id, owner, owner_role, status, base_model, fine_tuned_model, spec, error, \
     trained_tokens, planned_bytes, created_ms, started_ms, finished_ms, estimated_finish_ms, \
     shared_groups, deleted_ms";

fn job(r: &sqlx::any::AnyRow) -> Result<FineTuneJob, StoreError> {
    Ok(FineTuneJob {
        id: r.try_get(0)?,
        owner: r.try_get(1)?,
        owner_role: crate::identity::parse_role(&r.try_get::<String, _>(2)?)?,
        status: {
            let s: String = r.try_get(3)?;
            JobStatus::parse(&s).ok_or_else(|| {
                StoreError::Invalid(format!("a fine-tuning job has an unknown status `{s}`"))
            })?
        },
        base_model: r.try_get(4)?,
        fine_tuned_model: r.try_get(5)?,
        spec: r.try_get(6)?,
        error: r.try_get(7)?,
        trained_tokens: r.try_get(8)?,
        planned_bytes: r.try_get(9)?,
        created_ms: r.try_get(10)?,
        started_ms: r.try_get(11)?,
        finished_ms: r.try_get(12)?,
        estimated_finish_ms: r.try_get(13)?,
        shared_groups: r.try_get(14)?,
        deleted_ms: r.try_get(15)?,
    })
}

impl Store {
    pub async fn put_ft_job(&self, j: &FineTuneJob) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO fine_tuning_jobs ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(&j.id)
        .bind(&j.owner)
        .bind(j.owner_role.as_str())
        .bind(j.status.as_str())
        .bind(&j.base_model)
        .bind(&j.fine_tuned_model)
        .bind(&j.spec)
        .bind(&j.error)
        .bind(j.trained_tokens)
        .bind(j.planned_bytes)
        .bind(j.created_ms)
        .bind(j.started_ms)
        .bind(j.finished_ms)
        .bind(j.estimated_finish_ms)
        .bind(&j.shared_groups)
        .bind(j.deleted_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Write every changeable field of `j`, only while the stored status is
    /// one of `expect` from which [`JobStatus::may_move`] allows `j`'s;
    /// false when it was not (someone else moved it).
    pub async fn update_ft_job(
        &self,
        j: &FineTuneJob,
        expect: &[JobStatus],
    ) -> Result<bool, StoreError> {
        self.update_ft_job_if(j, expect, None).await
    }

    /// [`Store::update_ft_job`], only while `gateway` is the one training
    /// the job (its claim, [`Store::claim_ft_job`]).
    pub async fn update_ft_job_by(
        &self,
        j: &FineTuneJob,
        expect: &[JobStatus],
        gateway: &str,
    ) -> Result<bool, StoreError> {
        self.update_ft_job_if(j, expect, Some(gateway)).await
    }

    async fn update_ft_job_if(
        &self,
        j: &FineTuneJob,
        expect: &[JobStatus],
        trained_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let expect: Vec<JobStatus> = expect
            .iter()
            .copied()
            .filter(|from| JobStatus::may_move(*from, j.status))
            .collect();
        if expect.is_empty() {
            return Ok(false);
        }
        let list: Vec<String> = (0..expect.len()).map(|i| format!("${}", i + 11)).collect();
        let by = match trained_by {
            Some(_) => format!(" AND COALESCE(trained_by, '') = ${}", expect.len() + 11),
            None => String::new(),
        };
        let sql = format!(
            "UPDATE fine_tuning_jobs SET status = $1, fine_tuned_model = $2, error = $3, \
             trained_tokens = $4, started_ms = $5, finished_ms = $6, estimated_finish_ms = $7, \
             shared_groups = $8, deleted_ms = $9 WHERE id = $10 AND status IN ({}){by}",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(j.status.as_str())
            .bind(&j.fine_tuned_model)
            .bind(&j.error)
            .bind(j.trained_tokens)
            .bind(j.started_ms)
            .bind(j.finished_ms)
            .bind(j.estimated_finish_ms)
            .bind(&j.shared_groups)
            .bind(j.deleted_ms)
            .bind(&j.id);
        for s in &expect {
            q = q.bind(s.as_str());
        }
        if let Some(g) = trained_by {
            q = q.bind(g);
        }
        Ok(q.execute(&self.pool).await?.rows_affected() > 0)
    }

    /// Move a queued job to running for `gateway` (its `gateways.id`), with
    /// `j`'s start and estimate. Of several gateways claiming one job, one
    /// succeeds (true).
    pub async fn claim_ft_job(&self, j: &FineTuneJob, gateway: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE fine_tuning_jobs SET status = $1, started_ms = $2, estimated_finish_ms = $3, \
             trained_by = $4 WHERE id = $5 AND status = $6",
        )
        .bind(JobStatus::Running.as_str())
        .bind(j.started_ms)
        .bind(j.estimated_finish_ms)
        .bind(gateway)
        .bind(&j.id)
        .bind(JobStatus::Queued.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Put back in the queue the running jobs whose gateway is not in
    /// `alive` (it stopped or died, or the job was claimed before claims
    /// were recorded); returns their ids. A job whose claim changed
    /// meanwhile is left alone.
    pub async fn requeue_orphaned_ft_jobs(
        &self,
        alive: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, COALESCE(trained_by, '') FROM fine_tuning_jobs WHERE status = $1",
        )
        .bind(JobStatus::Running.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut requeued = Vec::new();
        for r in rows {
            let id: String = r.try_get(0)?;
            let by: String = r.try_get(1)?;
            if alive.contains(&by) {
                continue;
            }
            let done = sqlx::query(
                "UPDATE fine_tuning_jobs SET status = $1, estimated_finish_ms = NULL, trained_by = NULL \
                 WHERE id = $2 AND status = $3 AND COALESCE(trained_by, '') = $4",
            )
            .bind(JobStatus::Queued.as_str())
            .bind(&id)
            .bind(JobStatus::Running.as_str())
            .bind(&by)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() > 0 {
                requeued.push(id);
            }
        }
        Ok(requeued)
    }

    pub async fn ft_job(&self, id: &str) -> Result<Option<FineTuneJob>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM fine_tuning_jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job).transpose()
    }

    /// A page of jobs, newest first (`owner` None: everyone's), after the
    /// job `after`; and whether more follow.
    pub async fn ft_jobs(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<FineTuneJob>, bool), StoreError> {
        let cursor = match after {
            Some(a) => self.ft_job(a).await?.map(|j| (j.created_ms, j.id)),
            None => None,
        };
        let mut sql = format!("SELECT {COLUMNS} FROM fine_tuning_jobs WHERE 1 = 1");
        let mut n = 0;
        if owner.is_some() {
            n += 1;
            sql.push_str(&format!(" AND owner = ${n}"));
        }
        if cursor.is_some() {
            sql.push_str(&format!(
                " AND (created_ms < ${} OR (created_ms = ${} AND id < ${}))",
                n + 1,
                n + 1,
                n + 2
            ));
        }
        sql.push_str(&format!(
            " ORDER BY created_ms DESC, id DESC LIMIT {}",
            limit.max(0) + 1
        ));
        let mut q = sqlx::query(&sql);
        if let Some(o) = owner {
            q = q.bind(o);
        }
        if let Some((ms, id)) = &cursor {
            q = q.bind(*ms).bind(id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut jobs: Vec<FineTuneJob> = rows.iter().map(job).collect::<Result<_, _>>()?;
        let more = jobs.len() as i64 > limit.max(0);
        jobs.truncate(limit.max(0) as usize);
        Ok((jobs, more))
    }

    /// Every job in one of these states, oldest first (the scheduler's queue).
    pub async fn ft_jobs_in(&self, statuses: &[JobStatus]) -> Result<Vec<FineTuneJob>, StoreError> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (1..=statuses.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM fine_tuning_jobs WHERE status IN ({}) ORDER BY created_ms, id",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for s in statuses {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(job).collect()
    }

    /// The models fine-tuning made that were not deleted.
    pub async fn ft_models(&self) -> Result<Vec<FineTuneJob>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM fine_tuning_jobs WHERE status = '{}' \
             AND fine_tuned_model IS NOT NULL AND deleted_ms IS NULL ORDER BY created_ms",
            JobStatus::Succeeded
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job).collect()
    }

    /// `owner`'s jobs created since `since_ms`, those not finished, and the
    /// tokens their jobs trained since `since_ms` (the limits' counters).
    pub async fn ft_usage_of(
        &self,
        owner: &str,
        since_ms: i64,
    ) -> Result<(i64, i64, i64), StoreError> {
        let unfinished: Vec<String> = JobStatus::UNFINISHED
            .iter()
            .map(|s| format!("'{s}'"))
            .collect();
        let row = sqlx::query(&format!(
            "SELECT CAST(COALESCE(SUM(CASE WHEN created_ms >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN status IN ({}) THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM fine_tuning_jobs WHERE owner = $1",
            unfinished.join(", ")
        ))
        .bind(owner)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        let tokens = sqlx::query(
            "SELECT CAST(COALESCE(SUM(trained_tokens), 0) AS BIGINT) FROM fine_tuning_jobs \
             WHERE owner = $1 AND created_ms >= $2",
        )
        .bind(owner)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?, tokens.try_get(0)?))
    }

    /// Add an event to a job; returns its number.
    pub async fn add_ft_event(
        &self,
        job_id: &str,
        level: &str,
        kind: &str,
        message: &str,
        data: Option<&str>,
    ) -> Result<i64, StoreError> {
        // The number and the row in one statement; two events written at
        // the same moment may still collide on (job_id, seq): once more.
        let mut last = None;
        for _ in 0..3 {
            let r = sqlx::query(
                "INSERT INTO fine_tuning_events (job_id, seq, created_ms, level, kind, message, data) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM fine_tuning_events WHERE job_id = $1 \
                 RETURNING seq",
            )
            .bind(job_id)
            .bind(crate::now_ms())
            .bind(level)
            .bind(kind)
            .bind(message)
            .bind(data)
            .fetch_one(&self.pool)
            .await;
            match r {
                Ok(row) => return Ok(row.try_get::<i64, _>(0)?),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(StoreError::from)
            .unwrap_or_else(|| StoreError::Invalid("event not written".into())))
    }

    /// A page of a job's events, newest first, before event `after` (a
    /// number); and whether more follow.
    pub async fn ft_events(
        &self,
        job_id: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<FineTuneEvent>, bool), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT seq, created_ms, level, kind, message, data FROM fine_tuning_events \
             WHERE job_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT {}",
            limit.max(0) + 1
        ))
        .bind(job_id)
        .bind(after.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            out.push(FineTuneEvent {
                seq: r.try_get(0)?,
                created_ms: r.try_get(1)?,
                level: r.try_get(2)?,
                kind: r.try_get(3)?,
                message: r.try_get(4)?,
                data: r.try_get(5)?,
            });
        }
        let more = out.len() as i64 > limit.max(0);
        out.truncate(limit.max(0) as usize);
        Ok((out, more))
    }

    pub async fn add_ft_checkpoint(&self, c: &FineTuneCheckpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO fine_tuning_checkpoints (id, job_id, step, metrics, created_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&c.id)
        .bind(&c.job_id)
        .bind(c.step)
        .bind(&c.metrics)
        .bind(c.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A page of a job's checkpoints, newest first, after checkpoint `after`.
    pub async fn ft_checkpoints(
        &self,
        job_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<FineTuneCheckpoint>, bool), StoreError> {
        let before_step = match after {
            Some(a) => sqlx::query(
                "SELECT step FROM fine_tuning_checkpoints WHERE id = $1 AND job_id = $2",
            )
            .bind(a)
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?,
            None => None,
        };
        let rows = sqlx::query(&format!(
            "SELECT id, job_id, step, metrics, created_ms FROM fine_tuning_checkpoints \
             WHERE job_id = $1 AND step < $2 ORDER BY step DESC LIMIT {}",
            limit.max(0) + 1
        ))
        .bind(job_id)
        .bind(before_step.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            out.push(FineTuneCheckpoint {
                id: r.try_get(0)?,
                job_id: r.try_get(1)?,
                step: r.try_get(2)?,
                metrics: r.try_get(3)?,
                created_ms: r.try_get(4)?,
            });
        }
        let more = out.len() as i64 > limit.max(0);
        out.truncate(limit.max(0) as usize);
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(id: &str, owner: &str, created: i64) -> FineTuneJob {
        FineTuneJob {
            id: id.into(),
            owner: owner.into(),
            owner_role: crate::Role::Student,
            status: JobStatus::ValidatingFiles,
            base_model: "smol".into(),
            fine_tuned_model: None,
            spec: "{}".into(),
            error: None,
            trained_tokens: 0,
            planned_bytes: 1000,
            created_ms: created,
            started_ms: None,
            finished_ms: None,
            estimated_finish_ms: None,
            shared_groups: "[]".into(),
            deleted_ms: None,
        }
    }

    #[test]
    fn statuses_round_trip_and_only_allowed_moves_are_made() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(JobStatus::parse("done"), None);
        // Nothing leaves a finished status except a succeeded job's own
        // update; nothing goes back to validating.
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                if from.is_finished() && !(from == to && to == JobStatus::Succeeded) {
                    assert!(!JobStatus::may_move(from, to), "{from} -> {to}");
                }
                if to == JobStatus::ValidatingFiles {
                    assert!(!JobStatus::may_move(from, to), "{from} -> {to}");
                }
            }
        }
        assert!(JobStatus::may_move(JobStatus::Running, JobStatus::Queued));
    }

    /// One gateway's claim wins; a dead gateway's jobs go back to the
    /// queue, a live one's stay.
    #[tokio::test]
    async fn claims_are_exclusive_and_orphans_requeued() {
        let dir = std::env::temp_dir().join(format!("aula-ft-claims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open_in(&dir).await.unwrap();
        for (id, created) in [("a", 1), ("b", 2), ("c", 3)] {
            let mut j = sample(id, "ann", created);
            j.status = JobStatus::Queued;
            store.put_ft_job(&j).await.unwrap();
        }
        let mut a = store.ft_job("a").await.unwrap().unwrap();
        a.status = JobStatus::Running;
        a.started_ms = Some(10);
        assert!(store.claim_ft_job(&a, "gw-1").await.unwrap());
        assert!(
            !store.claim_ft_job(&a, "gw-2").await.unwrap(),
            "claimed twice"
        );
        let mut b = store.ft_job("b").await.unwrap().unwrap();
        b.status = JobStatus::Running;
        assert!(store.claim_ft_job(&b, "gw-2").await.unwrap());
        // `c` was left running before claims were recorded.
        let mut c = store.ft_job("c").await.unwrap().unwrap();
        c.status = JobStatus::Running;
        assert!(store.update_ft_job(&c, &[JobStatus::Queued]).await.unwrap());
        // gw-2 died: its job and the unclaimed one go back; gw-1's stays.
        let mut back = store
            .requeue_orphaned_ft_jobs(&["gw-1".to_string()])
            .await
            .unwrap();
        back.sort();
        assert_eq!(back, vec!["b".to_string(), "c".to_string()]);
        let now = |id: &'static str| {
            let store = store.clone();
            async move { store.ft_job(id).await.unwrap().unwrap() }
        };
        assert_eq!(now("a").await.status, JobStatus::Running);
        assert_eq!(now("a").await.started_ms, Some(10));
        assert_eq!(now("b").await.status, JobStatus::Queued);
        assert_eq!(now("c").await.status, JobStatus::Queued);
        // Nothing more to do; and a requeued job can be claimed again.
        assert!(
            store
                .requeue_orphaned_ft_jobs(&["gw-1".to_string()])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.claim_ft_job(&b, "gw-1").await.unwrap());
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn jobs_move_only_from_the_status_expected() {
        let dir = std::env::temp_dir().join(format!("aula-ft-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open_in(&dir).await.unwrap();
        store.put_ft_job(&sample("a", "ann", 1)).await.unwrap();
        store.put_ft_job(&sample("b", "ann", 2)).await.unwrap();
        store.put_ft_job(&sample("c", "bob", 3)).await.unwrap();
        let mut a = store.ft_job("a").await.unwrap().unwrap();
        a.status = JobStatus::Queued;
        assert!(
            store
                .update_ft_job(&a, &[JobStatus::ValidatingFiles])
                .await
                .unwrap()
        );
        a.status = JobStatus::Cancelled;
        assert!(
            store
                .update_ft_job(&a, &[JobStatus::Queued, JobStatus::Running])
                .await
                .unwrap()
        );
        // The trainer's end comes too late: the job stays cancelled.
        a.status = JobStatus::Succeeded;
        assert!(
            !store
                .update_ft_job(&a, &[JobStatus::Running])
                .await
                .unwrap()
        );
        assert_eq!(
            store.ft_job("a").await.unwrap().unwrap().status,
            JobStatus::Cancelled
        );

        let (page, more) = store.ft_jobs(Some("ann"), None, 1).await.unwrap();
        assert_eq!((page[0].id.as_str(), more), ("b", true));
        let (page, more) = store.ft_jobs(Some("ann"), Some("b"), 5).await.unwrap();
        assert_eq!((page.len(), page[0].id.as_str(), more), (1, "a", false));
        assert_eq!(store.ft_jobs(None, None, 10).await.unwrap().0.len(), 3);
        let queue = store
            .ft_jobs_in(&[JobStatus::ValidatingFiles, JobStatus::Queued])
            .await
            .unwrap();
        assert_eq!(
            queue.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(store.ft_usage_of("ann", 2).await.unwrap(), (1, 1, 0));

        for i in 0..3 {
            store
                .add_ft_event("b", "info", "message", &format!("m{i}"), None)
                .await
                .unwrap();
        }
        let (ev, more) = store.ft_events("b", None, 2).await.unwrap();
        assert_eq!((ev[0].message.as_str(), ev[1].seq, more), ("m2", 2, true));
        let (ev, more) = store.ft_events("b", Some(2), 10).await.unwrap();
        assert_eq!((ev.len(), ev[0].message.as_str(), more), (1, "m0", false));

        for step in [5, 10] {
            store
                .add_ft_checkpoint(&FineTuneCheckpoint {
                    id: format!("ck{step}"),
                    job_id: "b".into(),
                    step,
                    metrics: "{}".into(),
                    created_ms: step,
                })
                .await
                .unwrap();
        }
        let (c, _) = store.ft_checkpoints("b", None, 10).await.unwrap();
        assert_eq!(c[0].step, 10);
        let (c, _) = store.ft_checkpoints("b", Some("ck10"), 10).await.unwrap();
        assert_eq!((c.len(), c[0].step), (1, 5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
