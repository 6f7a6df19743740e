//! Usage from the ledger: per user, group or model since a time, from the
//! daily roll-ups and the raw rows after them, and the roll-up itself.

use super::*;

pub(super) const DAY_MS: i64 = 86_400_000;
/// A day is rolled up this long after it ended: requests admitted in its
/// last minutes have settled by then.
pub const ROLLUP_MARGIN_MS: i64 = 6 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    User,
    Group,
    Model,
}

impl std::str::FromStr for UsageBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(UsageBy::User),
            "group" => Ok(UsageBy::Group),
            "model" => Ok(UsageBy::Model),
            _ => Err(format!("`{s}`: use user, group or model")),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct UsageRow {
    pub key: String,
    pub requests: i64,
    pub ok: i64,
    pub errors: i64,
    pub cancelled: i64,
    pub unfinished: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Mean over requests that have the figure.
    pub mean_queue_ms: f64,
    pub mean_ttft_ms: f64,
    #[serde(skip)]
    queue_sum: f64,
    #[serde(skip)]
    queue_n: i64,
    #[serde(skip)]
    ttft_sum: f64,
    #[serde(skip)]
    ttft_n: i64,
}

impl Store {
    /// Usage since `since_ms`, summed by user, group (a request counts for
    /// each group its user was in) or model, sorted by key.
    pub async fn usage(&self, by: UsageBy, since_ms: i64) -> Result<Vec<UsageRow>, StoreError> {
        self.usage_for(by, since_ms, None).await
    }

    /// [`Store::usage`], of one user's requests only when `user` is given.
    pub async fn usage_for(
        &self,
        by: UsageBy,
        since_ms: i64,
        user: Option<&str>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let by_user = |n: u8| {
            if user.is_some() {
                format!("AND user_name = ${n}")
            } else {
                String::new()
            }
        };
        // Whole days already rolled up come from `usage_daily`; the rest
        // (and a `since` inside a day) from the raw rows.
        let through = self.rolled_through_day().await?;
        let (rolled, raw_from) = if since_ms.rem_euclid(DAY_MS) == 0 && through >= since_ms / DAY_MS
        {
            (Some((since_ms / DAY_MS, through)), (through + 1) * DAY_MS)
        } else {
            (None, since_ms)
        };
        let mut rows = Vec::new();
        if let Some((first, last)) = rolled {
            let sql = format!(
                "SELECT user_name, groups, model, status, CAST(SUM(requests) AS BIGINT), \
                 CAST(SUM(prompt_tokens) AS BIGINT), CAST(SUM(completion_tokens) AS BIGINT), \
                 SUM(queue_sum), CAST(SUM(queue_n) AS BIGINT), SUM(ttft_sum), CAST(SUM(ttft_n) AS BIGINT) \
                 FROM usage_daily WHERE day >= $1 AND day <= $2 {} GROUP BY user_name, groups, model, status",
                by_user(3)
            );
            let q = sqlx::query(&sql).bind(first).bind(last);
            let q = match user {
                Some(u) => q.bind(u),
                None => q,
            };
            rows.extend(q.fetch_all(&self.pool).await?);
        }
        let sql = format!(
            "SELECT user_name, groups, model, status, COUNT(*), \
             CAST(SUM(prompt_tokens) AS BIGINT), CAST(SUM(completion_tokens) AS BIGINT), \
             SUM(queue_ms), COUNT(queue_ms), SUM(ttft_ms), COUNT(ttft_ms) \
             FROM requests WHERE admitted_ms >= $1 {} GROUP BY user_name, groups, model, status",
            by_user(2)
        );
        let q = sqlx::query(&sql).bind(raw_from);
        let q = match user {
            Some(u) => q.bind(u),
            None => q,
        };
        rows.extend(q.fetch_all(&self.pool).await?);
        let mut out: BTreeMap<String, UsageRow> = BTreeMap::new();
        for r in rows {
            let user: String = r.try_get(0)?;
            let groups: String = r.try_get(1)?;
            let model: String = r.try_get(2)?;
            let status: String = r.try_get(3)?;
            let n: i64 = r.try_get(4)?;
            let prompt: Option<i64> = r.try_get(5)?;
            let completion: Option<i64> = r.try_get(6)?;
            let qsum: Option<f64> = r.try_get(7)?;
            let qn: i64 = r.try_get(8)?;
            let tsum: Option<f64> = r.try_get(9)?;
            let tn: i64 = r.try_get(10)?;
            let keys: Vec<String> = match by {
                UsageBy::User => vec![user],
                UsageBy::Model => vec![model],
                UsageBy::Group if groups.is_empty() => vec!["(no group)".into()],
                UsageBy::Group => groups.split(',').map(String::from).collect(),
            };
            for k in keys {
                let row = out.entry(k.clone()).or_insert_with(|| UsageRow {
                    key: k,
                    ..Default::default()
                });
                row.requests += n;
                match Outcome::from_db(&status) {
                    Outcome::Ok => row.ok += n,
                    Outcome::Unfinished => row.unfinished += n,
                    Outcome::Cancelled => row.cancelled += n,
                    Outcome::Timeout | Outcome::Error(_) => row.errors += n,
                }
                row.prompt_tokens += prompt.unwrap_or(0);
                row.completion_tokens += completion.unwrap_or(0);
                row.queue_sum += qsum.unwrap_or(0.0);
                row.queue_n += qn;
                row.ttft_sum += tsum.unwrap_or(0.0);
                row.ttft_n += tn;
            }
        }
        Ok(out
            .into_values()
            .map(|mut r| {
                r.mean_queue_ms = if r.queue_n > 0 {
                    r.queue_sum / r.queue_n as f64
                } else {
                    0.0
                };
                r.mean_ttft_ms = if r.ttft_n > 0 {
                    r.ttft_sum / r.ttft_n as f64
                } else {
                    0.0
                };
                r
            })
            .collect())
    }

    /// The last UTC day (days since 1970) whose requests are in `usage_daily`; -1 for none.
    pub async fn rolled_through_day(&self) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT value FROM meta WHERE key = 'usage_rolled_through_day'")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => r.try_get(0)?,
            None => -1,
        })
    }

    /// Roll the ledger up into `usage_daily`, through the last UTC day that
    /// ended at least [`ROLLUP_MARGIN_MS`] before `now_ms` (requests admitted
    /// that day have settled by then). One transaction; returns the days rolled.
    pub async fn roll_up_usage(&self, now_ms: i64) -> Result<i64, StoreError> {
        let target = (now_ms - ROLLUP_MARGIN_MS).div_euclid(DAY_MS) - 1;
        let mut tx = self.pool.begin().await?;
        let through: i64 =
            sqlx::query("SELECT value FROM meta WHERE key = 'usage_rolled_through_day'")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        if target <= through {
            return Ok(0);
        }
        // Start at the ledger's first day, not at 1970.
        let first: Option<i64> =
            sqlx::query("SELECT MIN(admitted_ms) FROM requests WHERE admitted_ms >= $1")
                .bind((through + 1) * DAY_MS)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        if let Some(first) = first {
            let from = first.div_euclid(DAY_MS).max(through + 1);
            sqlx::query(
                "INSERT INTO usage_daily (day, user_name, groups, model, status, requests, prompt_tokens, \
                 completion_tokens, queue_sum, queue_n, ttft_sum, ttft_n) \
                 SELECT admitted_ms / 86400000, user_name, groups, model, status, COUNT(*), \
                 CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT), \
                 COALESCE(SUM(queue_ms), 0.0), COUNT(queue_ms), COALESCE(SUM(ttft_ms), 0.0), COUNT(ttft_ms) \
                 FROM requests WHERE admitted_ms >= $1 AND admitted_ms < $2 \
                 GROUP BY admitted_ms / 86400000, user_name, groups, model, status",
            )
            .bind(from * DAY_MS)
            .bind((target + 1) * DAY_MS)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE meta SET value = $1 WHERE key = 'usage_rolled_through_day'")
            .bind(target)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(target - through)
    }

    /// Tokens (prompt + completion) each user has used since `since_ms`.
    pub async fn tokens_by_user_since(
        &self,
        since_ms: i64,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_name, CAST(SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)) AS BIGINT) \
             FROM requests WHERE admitted_ms >= $1 GROUP BY user_name",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            out.insert(r.try_get(0)?, r.try_get::<Option<i64>, _>(1)?.unwrap_or(0));
        }
        Ok(out)
    }

    /// Rows still marked unfinished (after a crash, the requests that were in flight).
    pub async fn unfinished_count(&self) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT COUNT(*) FROM requests WHERE status = 'unfinished'")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get(0)?)
    }
}
