//! Budgets and rate windows shared by several gateways on one PostgreSQL.
//!
//! The rules:
//! - A **window** is one counter of one user over one period (a calendar
//!   minute, a UTC day, a week, the term; concurrency has one window for
//!   ever). It holds `used` (settled) and `reserved` (held by running
//!   requests).
//! - A request is admitted by **one transaction** that takes each of its
//!   windows in a fixed order (the [`Counter`] order: no two transactions
//!   wait on each other in a cycle) with one conditional
//!   `UPDATE … SET reserved = reserved + n WHERE used + reserved + n <= limit`.
//!   If any window has no room the transaction is rolled back and nothing
//!   is held. Two gateways admitting for the same user wait on the same row
//!   lock, so no budget is overshot by more than one reservation however
//!   many gateways there are.
//! - A window row first seen is seeded from the ledger (the tokens of the
//!   user's requests admitted since the window began), so usage from before
//!   the shared path — or from a gateway that started today — counts.
//! - The request's holds are one **reservation** row: its gateway, and a
//!   lease (`expires_ms`) its gateway renews while it lives
//!   ([`Store::renew_budgets`]). **Settling** ([`Store::settle_budget`])
//!   deletes the row and moves the holds to `used` with the real usage.
//!   A lease that ran out (the gateway was killed or cut off from the
//!   database) is settled by whichever gateway sweeps first
//!   ([`Store::expired_budgets`]) as if the request used its whole
//!   reservation: its real usage is unknown, and charging less could let
//!   usage pass a budget.
//! - Settling is idempotent: a reservation settled twice (a sweeper and its
//!   late gateway) counts once.
//!
//! Window rows of past minutes, days and weeks are removed by the sweep
//! once nothing holds them ([`Store::forget_old_windows`]).
//!
//! On PostgreSQL admission and settlement are one statement each: the
//! functions `aula_reserve` and `aula_settle` (`budgets.sql`, installed at
//! start) run the same steps inside the server, so each costs one round
//! trip instead of 3 + n. SQLite (one gateway, and these rules' unit tests)
//! runs them as statements.

use crate::db::{Store, StoreError};
use sqlx::Row;

/// What a window counts, in the order a reservation takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    /// Requests running or waiting (a hold of 1, settled as 0).
    Active = 0,
    /// Requests in a calendar minute (a hold of 1, settled as 1).
    MinuteRequests = 1,
    /// Tokens in a calendar minute.
    MinuteTokens = 2,
    /// Tokens in a UTC day.
    Day = 3,
    /// Tokens in a week (Monday to Sunday, UTC).
    Week = 4,
    /// Tokens in the term.
    Term = 5,
}

impl Counter {
    fn from_i64(v: i64) -> Option<Counter> {
        Some(match v {
            0 => Counter::Active,
            1 => Counter::MinuteRequests,
            2 => Counter::MinuteTokens,
            3 => Counter::Day,
            4 => Counter::Week,
            5 => Counter::Term,
            _ => return None,
        })
    }

    /// Seeded from the ledger when first seen: the token periods.
    fn seeded(self) -> bool {
        matches!(self, Counter::Day | Counter::Week | Counter::Term)
    }

    /// What a hold of `held` becomes when its request used `tokens`.
    fn settled(self, held: i64, tokens: Option<i64>) -> i64 {
        match self {
            Counter::Active => 0,
            Counter::MinuteRequests => 1,
            _ => tokens.map_or(held, |t| t.max(0)),
        }
    }
}

/// One window a request takes `amount` of, refused past `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub counter: Counter,
    pub start_ms: i64,
    pub limit: i64,
    pub amount: i64,
}

/// The first window that had no room: its state when the request asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub hold: Hold,
    pub used: i64,
    pub reserved: i64,
}

fn encode(holds: &[Hold]) -> String {
    holds
        .iter()
        .map(|h| format!("{}:{}:{}", h.counter as i64, h.start_ms, h.amount))
        .collect::<Vec<_>>()
        .join(";")
}

/// The holds of a reservation row: (counter, window start, amount).
fn decode(s: &str) -> Vec<(Counter, i64, i64)> {
    s.split(';')
        .filter_map(|h| {
            let mut p = h.split(':').map(|n| n.parse::<i64>().ok());
            let c = Counter::from_i64(p.next()??)?;
            Some((c, p.next()??, p.next()??))
        })
        .collect()
}

/// The server-side functions, for [`install`].
const PG_FUNCTIONS: &str = include_str!("budgets.sql");

/// Create (or replace) the PostgreSQL functions, one gateway at a time.
pub(crate) async fn install(pool: &sqlx::AnyPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(4707)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(PG_FUNCTIONS).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

impl Store {
    /// Take every hold of one request, in the counters' order, in one
    /// transaction, or none of them: `Ok(Err(refusal))` names the first
    /// window without room. The reservation `id` is leased to `gateway`
    /// until `expires_ms`.
    pub async fn reserve_budget(
        &self,
        id: &str,
        gateway: &str,
        user: &str,
        holds: &[Hold],
        expires_ms: i64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let mut holds = holds.to_vec();
        holds.sort_by_key(|h| h.counter);
        if self.is_postgres() {
            let asked = holds
                .iter()
                .map(|h| {
                    format!(
                        "{}:{}:{}:{}",
                        h.counter as i64, h.start_ms, h.limit, h.amount
                    )
                })
                .collect::<Vec<_>>()
                .join(";");
            let r = sqlx::query(
                "SELECT refused, w_used, w_reserved FROM aula_reserve($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(gateway)
            .bind(user)
            .bind(asked)
            .bind(expires_ms)
            .fetch_one(&self.pool)
            .await?;
            let refused: i64 = r.try_get(0)?;
            if refused < 0 {
                return Ok(Ok(()));
            }
            let hold = holds
                .iter()
                .find(|h| h.counter as i64 == refused)
                .copied()
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "aula_reserve refused counter {refused}, not asked for"
                    ))
                })?;
            return Ok(Err(Refusal {
                hold,
                used: r.try_get(1)?,
                reserved: r.try_get(2)?,
            }));
        }
        let mut tx = self.pool.begin().await?;
        for h in &holds {
            if take(&mut tx, user, h).await? {
                continue;
            }
            let Some((used, reserved)) = window(&mut tx, user, h).await? else {
                // A window not seen before: make it, then take from it.
                let seed = if h.counter.seeded() {
                    let r = sqlx::query(
                        "SELECT CAST(COALESCE(SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)), 0) AS BIGINT) \
                         FROM requests WHERE user_name = $1 AND admitted_ms >= $2",
                    )
                    .bind(user)
                    .bind(h.start_ms)
                    .fetch_one(&mut *tx)
                    .await?;
                    r.try_get::<i64, _>(0)?
                } else {
                    0
                };
                sqlx::query(
                    "INSERT INTO budget_windows (user_name, counter, start_ms, used, reserved) \
                     VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
                )
                .bind(user)
                .bind(h.counter as i64)
                .bind(h.start_ms)
                .bind(seed)
                .execute(&mut *tx)
                .await?;
                if take(&mut tx, user, h).await? {
                    continue;
                }
                let (used, reserved) = window(&mut tx, user, h).await?.unwrap_or((seed, 0));
                tx.rollback().await?;
                return Ok(Err(Refusal {
                    hold: *h,
                    used,
                    reserved,
                }));
            };
            tx.rollback().await?;
            return Ok(Err(Refusal {
                hold: *h,
                used,
                reserved,
            }));
        }
        sqlx::query(
            "INSERT INTO budget_reservations (id, gateway, user_name, holds, expires_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(gateway)
        .bind(user)
        .bind(encode(&holds))
        .bind(expires_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// End reservation `id`: its holds leave `reserved`, and `used` gains
    /// what the request used (`Some(tokens)`), or its whole reservation
    /// (`None`: a lease that ran out). False when it was already settled.
    pub async fn settle_budget(&self, id: &str, tokens: Option<i64>) -> Result<bool, StoreError> {
        if self.is_postgres() {
            let r = sqlx::query("SELECT aula_settle($1, $2)")
                .bind(id)
                .bind(tokens.map_or(-1, |t| t.max(0)))
                .fetch_one(&self.pool)
                .await?;
            return Ok(r.try_get::<bool, _>(0)?);
        }
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("DELETE FROM budget_reservations WHERE id = $1 RETURNING user_name, holds")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let user: String = row.try_get(0)?;
        let holds: String = row.try_get(1)?;
        // Encoded in the counters' order: rows are locked in the same
        // order as admission takes them.
        for (counter, start_ms, held) in decode(&holds) {
            sqlx::query(
                "UPDATE budget_windows SET \
                 reserved = CASE WHEN reserved > $4 THEN reserved - $4 ELSE 0 END, \
                 used = used + $5 \
                 WHERE user_name = $1 AND counter = $2 AND start_ms = $3",
            )
            .bind(&user)
            .bind(counter as i64)
            .bind(start_ms)
            .bind(held)
            .bind(counter.settled(held, tokens))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Extend the leases of `gateway`'s reservations to `expires_ms`;
    /// returns how many it holds.
    pub async fn renew_budgets(&self, gateway: &str, expires_ms: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("UPDATE budget_reservations SET expires_ms = $1 WHERE gateway = $2")
            .bind(expires_ms)
            .bind(gateway)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The reservations `gateway` holds.
    pub async fn budget_ids_of(&self, gateway: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM budget_reservations WHERE gateway = $1")
            .bind(gateway)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// Reservations whose lease ran out before `now_ms` (at most `limit`),
    /// to settle with [`Store::settle_budget`]`(id, None)`.
    pub async fn expired_budgets(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM budget_reservations WHERE expires_ms < $1 ORDER BY expires_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// Remove windows nothing holds that ended: minutes before
    /// `minute_before`, days and weeks before `period_before`.
    pub async fn forget_old_windows(
        &self,
        minute_before: i64,
        period_before: i64,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM budget_windows WHERE reserved = 0 AND ( \
             (counter IN ($1, $2) AND start_ms < $3) OR (counter IN ($4, $5) AND start_ms < $6))",
        )
        .bind(Counter::MinuteRequests as i64)
        .bind(Counter::MinuteTokens as i64)
        .bind(minute_before)
        .bind(Counter::Day as i64)
        .bind(Counter::Week as i64)
        .bind(period_before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// A window's (used, reserved); (0, 0) for one never taken from.
    pub async fn budget_window(
        &self,
        user: &str,
        counter: Counter,
        start_ms: i64,
    ) -> Result<(i64, i64), StoreError> {
        let r = sqlx::query(
            "SELECT used, reserved FROM budget_windows \
             WHERE user_name = $1 AND counter = $2 AND start_ms = $3",
        )
        .bind(user)
        .bind(counter as i64)
        .bind(start_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match r {
            Some(r) => (r.try_get(0)?, r.try_get(1)?),
            None => (0, 0),
        })
    }

    /// Reservations held now: (count, tokens held in their day windows).
    pub async fn budget_holds(&self) -> Result<(i64, i64), StoreError> {
        let rows = sqlx::query("SELECT holds FROM budget_reservations")
            .fetch_all(&self.pool)
            .await?;
        let mut tokens = 0i64;
        for r in &rows {
            let h: String = r.try_get(0)?;
            tokens += decode(&h)
                .iter()
                .filter(|(c, _, _)| *c == Counter::Day)
                .map(|(_, _, a)| a)
                .sum::<i64>();
        }
        Ok((rows.len() as i64, tokens))
    }
}

/// One conditional take: true when the window had room (and now holds it).
async fn take(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &str,
    h: &Hold,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE budget_windows SET reserved = reserved + $4 \
         WHERE user_name = $1 AND counter = $2 AND start_ms = $3 AND used + reserved + $4 <= $5",
    )
    .bind(user)
    .bind(h.counter as i64)
    .bind(h.start_ms)
    .bind(h.amount)
    .bind(h.limit)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

async fn window(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &str,
    h: &Hold,
) -> Result<Option<(i64, i64)>, StoreError> {
    let r = sqlx::query(
        "SELECT used, reserved FROM budget_windows \
         WHERE user_name = $1 AND counter = $2 AND start_ms = $3",
    )
    .bind(user)
    .bind(h.counter as i64)
    .bind(h.start_ms)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match r {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hold(counter: Counter, limit: i64, amount: i64) -> Hold {
        Hold {
            counter,
            start_ms: 0,
            limit,
            amount,
        }
    }

    /// The rules on SQLite (the same statements PostgreSQL runs; the
    /// several-gateway races are tests/postgres.rs's).
    #[tokio::test]
    async fn reserve_settle_expire_and_refuse_all_or_nothing() {
        let dir = std::env::temp_dir().join(format!("aula-budgets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open_in(&dir).await.unwrap();
        let day = hold(Counter::Day, 1000, 400);
        let active = hold(Counter::Active, 2, 1);
        let both = [day, active];
        assert_eq!(
            s.reserve_budget("a", "g1", "u", &both, 10).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            s.reserve_budget("b", "g1", "u", &both, 10).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (0, 800)
        );
        // A third: the concurrency window (taken first) has no room; the
        // day window is left as it was.
        let r = s
            .reserve_budget("c", "g1", "u", &both, 10)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (r.hold.counter, r.used, r.reserved),
            (Counter::Active, 0, 2)
        );
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (0, 800)
        );
        // Settled with what it used; twice counts once.
        assert!(s.settle_budget("a", Some(50)).await.unwrap());
        assert!(!s.settle_budget("a", Some(50)).await.unwrap());
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (50, 400)
        );
        assert_eq!(
            s.budget_window("u", Counter::Active, 0).await.unwrap(),
            (0, 1)
        );
        // Day: 50 used + 400 held + 400 asked fits 1000; 50 + 800 + 400 does not.
        assert_eq!(
            s.reserve_budget("c", "g2", "u", &both, 100).await.unwrap(),
            Ok(())
        );
        let r = s
            .reserve_budget("d", "g2", "u", &[day], 100)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (r.hold.counter, r.used, r.reserved),
            (Counter::Day, 50, 800)
        );
        // g1 stops renewing; g2 renews: only b's lease runs out.
        assert_eq!(s.renew_budgets("g2", 200).await.unwrap(), 1);
        assert_eq!(
            s.expired_budgets(150, 10).await.unwrap(),
            vec!["b".to_string()]
        );
        // Expired: charged its whole reservation.
        assert!(s.settle_budget("b", None).await.unwrap());
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (450, 400)
        );
        assert_eq!(s.budget_holds().await.unwrap(), (1, 400));
        assert!(s.settle_budget("c", Some(0)).await.unwrap());
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (450, 0)
        );
        assert_eq!(
            s.budget_window("u", Counter::Active, 0).await.unwrap(),
            (0, 0)
        );
        assert_eq!(s.budget_holds().await.unwrap(), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_new_window_starts_from_the_ledger_and_old_ones_are_forgotten() {
        let dir = std::env::temp_dir().join(format!("aula-budgets-seed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open_in(&dir).await.unwrap();
        sqlx::query(
            "INSERT INTO requests (id, user_name, groups, model, admitted_ms, status, prompt_tokens, completion_tokens) \
             VALUES ('r1', 'u', '', 'm', 5000, 'ok', 30, 70), ('r2', 'u', '', 'm', 100, 'ok', 1, 1)",
        )
        .execute(&s.pool)
        .await
        .unwrap();
        let day = Hold {
            counter: Counter::Day,
            start_ms: 1000,
            limit: 150,
            amount: 60,
        };
        let r = s
            .reserve_budget("a", "g", "u", &[day], 10)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!((r.used, r.reserved), (100, 0));
        let fits = Hold { amount: 50, ..day };
        assert_eq!(
            s.reserve_budget("a", "g", "u", &[fits], 10).await.unwrap(),
            Ok(())
        );
        s.settle_budget("a", Some(10)).await.unwrap();
        assert_eq!(
            s.budget_window("u", Counter::Day, 1000).await.unwrap(),
            (110, 0)
        );
        let minute = Hold {
            counter: Counter::MinuteRequests,
            start_ms: 60_000,
            limit: 1,
            amount: 1,
        };
        assert_eq!(
            s.reserve_budget("b", "g", "u", &[minute], 10)
                .await
                .unwrap(),
            Ok(())
        );
        // Held: not forgotten; settled: forgotten once its minute is past.
        assert_eq!(s.forget_old_windows(1_000_000, 0).await.unwrap(), 0);
        s.settle_budget("b", Some(5)).await.unwrap();
        assert_eq!(
            s.budget_window("u", Counter::MinuteRequests, 60_000)
                .await
                .unwrap(),
            (1, 0)
        );
        assert_eq!(s.forget_old_windows(1_000_000, 2000).await.unwrap(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
