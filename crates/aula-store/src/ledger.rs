//! The usage ledger: one row per admitted request, written when it is
//! admitted (status `unfinished`) and finalized when it ends.
//!
//! Rules:
//! - A request's end is durable before the client has the end of its
//!   answer ([`Ledger::finish`]). On SQLite that means one line appended
//!   to the ledger's journal, moved into the database within
//!   [`BEGIN_WITHIN`] by a writer thread in batches ([`journal`] states its
//!   rules); on PostgreSQL, the commit that holds the row (one writer task
//!   groups whatever waits into one commit).
//! - Its beginning does not wait while the writer keeps up
//!   ([`Ledger::begin`]): the first row waits in memory and is written with
//!   the next commit or within [`BEGIN_WITHIN`]; a request that ends before
//!   that is written once, whole. When the ledger cannot be written (the
//!   last PostgreSQL commit failed or has taken [`STUCK_AFTER_MS`], too many
//!   rows wait for SQLite, or the journal cannot be written), new requests
//!   are refused before they run.
//! - So a gateway killed with SIGKILL loses no finished request, and leaves
//!   every request it had admitted more than [`BEGIN_WITHIN`] before marked
//!   `unfinished`.
//! - Readers of the database see a finished request within
//!   [`BEGIN_WITHIN`], or at once after [`Ledger::flush`]; a process that
//!   opens an SQLite store folds the journal in first.
//! - Ids are time-ordered ([`new_request_id`]), so each commit appends to
//!   the same few index pages instead of touching one page per row.

use crate::db::{Store, StoreError};
use sqlx::Row;
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};
pub mod journal;
mod usage;
pub use usage::*;

/// A ledger row's id: 8 characters of the admission time in milliseconds
/// (base 62, in ASCII order, so ids sort by time) and 12 random ones.
pub fn new_request_id() -> String {
    use rand::Rng;
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut t = u64::try_from(crate::now_ms()).unwrap_or(0);
    let mut id = [0u8; 20];
    for slot in id[..8].iter_mut().rev() {
        *slot = DIGITS[(t % 62) as usize];
        t /= 62;
    }
    let mut rng = rand::thread_rng();
    for slot in &mut id[8..] {
        *slot = DIGITS[rng.gen_range(0..62)];
    }
    id.iter().map(|&b| char::from(b)).collect()
}

/// How long the writer may be busy with one commit before new requests
/// wait for theirs (a locked or unreachable database).
pub const STUCK_AFTER_MS: i64 = 200;

/// How long an admitted request's first row may wait in memory.
pub const BEGIN_WITHIN: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub id: String,
    pub user: String,
    pub groups: Vec<String>,
    pub model: String,
    pub admitted_ms: i64,
}

/// How a request ended: the ledger's `status` column, written and read
/// only through this type (`unfinished`, `ok`, `cancelled`, `timeout`,
/// `error:STATUS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Admitted, not yet settled (or the gateway stopped before it was).
    #[default]
    Unfinished,
    /// Answered in full.
    Ok,
    /// The client left before the answer was complete.
    Cancelled,
    /// The engine did not answer in time.
    Timeout,
    /// Failed with this HTTP status (the gateway's or the engine's).
    Error(u16),
}

impl Outcome {
    /// As stored: `ok`, `error:502`...
    pub fn as_db(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Outcome::Unfinished => "unfinished".into(),
            Outcome::Ok => "ok".into(),
            Outcome::Cancelled => "cancelled".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Error(code) => format!("error:{code}").into(),
        }
    }

    /// Read back what [`Outcome::as_db`] wrote; anything else is an error
    /// of unknown status (0), counted with the errors.
    pub fn from_db(s: &str) -> Outcome {
        match s {
            "unfinished" => Outcome::Unfinished,
            "ok" => Outcome::Ok,
            "cancelled" => Outcome::Cancelled,
            "timeout" => Outcome::Timeout,
            s => Outcome::Error(
                s.strip_prefix("error:")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
            ),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Outcome::Error(_))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_db())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Finish {
    /// The row as admitted (so finalizing never depends on the order of writes).
    pub record: RequestRecord,
    pub status: Outcome,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub queue_ms: f64,
    pub ttft_ms: Option<f64>,
    pub duration_ms: f64,
}

enum Op {
    Begin(RequestRecord),
    Finish(Finish),
    /// Nothing to write: answered once everything sent before it is committed.
    Flush,
}

type Ack = oneshot::Sender<Result<(), String>>;

/// Handle to the ledger writer; cheap to clone.
#[derive(Clone)]
pub struct Ledger(std::sync::Arc<Writer>);

enum Writer {
    /// SQLite: the journal and its writer thread.
    Journal(journal::Journal),
    /// PostgreSQL: a writer task fed by a channel.
    Channel(Channel),
}

struct Channel {
    tx: mpsc::UnboundedSender<(Op, Option<Ack>)>,
    health: std::sync::Arc<Health>,
    /// The loop that writes first rows by their deadline, stopped by
    /// [`Ledger::close`].
    housekeeping: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Ledger {
    /// Start the writer (on SQLite a thread of its own; on PostgreSQL a
    /// task on the current runtime).
    pub fn start(store: Store) -> Ledger {
        if let Some(path) = store.sqlite_path() {
            return Ledger(std::sync::Arc::new(Writer::Journal(
                journal::Journal::start(path),
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let health = std::sync::Arc::new(Health::default());
        let housekeeping = Some(tokio::spawn(housekeeping(tx.downgrade(), health.clone())));
        tokio::spawn(writer(store, rx, health.clone()));
        Ledger(std::sync::Arc::new(Writer::Channel(Channel {
            tx,
            health,
            housekeeping: std::sync::Mutex::new(housekeeping),
        })))
    }

    /// Returns once everything recorded before it is in the database.
    pub async fn flush(&self) -> Result<(), String> {
        match &*self.0 {
            Writer::Journal(j) => j.flush().await,
            Writer::Channel(c) => c.send(Op::Flush).await,
        }
    }

    /// At shutdown, once no request is left: commit what is waiting and stop
    /// the writer's loops (the store can be closed after this).
    pub async fn close(&self) {
        match &*self.0 {
            Writer::Journal(j) => j.close().await,
            Writer::Channel(c) => {
                if let Err(e) = c.send(Op::Flush).await {
                    tracing::error!("the ledger could not be written at shutdown: {e}");
                }
                if let Some(h) = c.housekeeping.lock().ok().and_then(|mut h| h.take()) {
                    h.abort();
                }
            }
        }
    }

    /// Record an admitted request. While the writer keeps up, the row goes
    /// into the next commit and this returns at once; otherwise it returns
    /// the reason the request must not run (see the module's rules).
    pub async fn begin(&self, rec: RequestRecord) -> Result<(), String> {
        match &*self.0 {
            Writer::Journal(j) => j.begin(rec),
            Writer::Channel(c) => {
                if c.health.keeping_up() && !c.tx.is_closed() {
                    c.health.waiting().push(rec);
                    Ok(())
                } else {
                    c.send(Op::Begin(rec)).await
                }
            }
        }
    }

    /// Finalize a request; returns once the row is durable.
    pub async fn finish(&self, f: Finish) -> Result<(), String> {
        match &*self.0 {
            Writer::Journal(j) => j.finish(f),
            Writer::Channel(c) => c.send(Op::Finish(f)).await,
        }
    }

    /// Finalize without waiting (for requests whose client is gone).
    pub fn finish_detached(&self, f: Finish) {
        match &*self.0 {
            Writer::Journal(j) => {
                let _ = j.finish(f);
            }
            Writer::Channel(c) => {
                let _ = c.tx.send((Op::Finish(f), None));
            }
        }
    }
}

impl Channel {
    async fn send(&self, op: Op) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((op, Some(ack)))
            .map_err(|_| "the ledger writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the ledger writer has stopped".to_string())?
    }
}

/// Every [`BEGIN_WITHIN`]: a nudge to the writer when first rows wait.
async fn housekeeping(
    tx: mpsc::WeakUnboundedSender<(Op, Option<Ack>)>,
    health: std::sync::Arc<Health>,
) {
    let mut tick = tokio::time::interval(BEGIN_WITHIN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !health.waiting().is_empty() {
            let Some(tx) = tx.upgrade() else { return };
            if tx.send((Op::Flush, None)).is_err() {
                // No writer: what waits cannot be written.
                health
                    .failing
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// What the writer is doing, for [`Ledger::begin`] to decide whether to
/// wait, and the first rows waiting for the next commit.
#[derive(Default)]
struct Health {
    /// The last commit failed.
    failing: std::sync::atomic::AtomicBool,
    /// When the commit under way started (ms since 1970); 0 when idle.
    busy_since: std::sync::atomic::AtomicI64,
    /// First rows not yet handed to the writer.
    waiting: std::sync::Mutex<Vec<RequestRecord>>,
}

impl Health {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<RequestRecord>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first rows waiting, for the commit the writer is about to make:
    /// taken after the batch, so a request's first row is always in the
    /// commit of its final row or an earlier one.
    fn take_waiting(&self) -> Vec<RequestRecord> {
        std::mem::take(&mut *self.waiting())
    }

    fn keeping_up(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let since = self.busy_since.load(Relaxed);
        !self.failing.load(Relaxed) && (since == 0 || crate::now_ms() - since < STUCK_AFTER_MS)
    }

    fn started(&self) {
        self.busy_since
            .store(crate::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    fn ended<T, E>(&self, result: &Result<T, E>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.failing.store(result.is_err(), Relaxed);
        self.busy_since.store(0, Relaxed);
    }
}

async fn writer(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<(Op, Option<Ack>)>,
    health: std::sync::Arc<Health>,
) {
    let mut batch = Vec::with_capacity(256);
    // One connection kept for writing (no pool round trip per batch); a new
    // one after any error.
    let mut conn: Option<sqlx::pool::PoolConnection<sqlx::Any>> = None;
    while rx.recv_many(&mut batch, 256).await > 0 {
        let waiting = health.take_waiting();
        health.started();
        // A database that does not answer (a network cut) fails the batch
        // after a bound, like one that refuses: nobody waits for ever.
        let result = crate::db::within(async {
            if conn.is_none() {
                conn = Some(store.pool.acquire().await?);
            }
            match conn.as_mut() {
                Some(c) => write_batch(c, &waiting, &batch).await,
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| {
            conn = None;
            tracing::error!("ledger write failed: {e}");
            format!("the usage ledger cannot be written: {e}")
        });
        health.ended(&result);
        answer(&mut batch, &result);
    }
}

/// Tell everyone in the batch how its commit went, and empty it.
fn answer(batch: &mut Vec<(Op, Option<Ack>)>, result: &Result<(), String>) {
    for (_, ack) in batch.drain(..) {
        if let Some(ack) = ack {
            let _ = ack.send(result.clone());
        }
    }
}

/// Fold the ledger's journal next to an SQLite database into it (see
/// [`journal`]): rows a gateway answered but had not yet moved there, from
/// one still running or one that was killed. A failure is logged, not
/// fatal: the rows stay in the journal for the next open.
pub(crate) async fn fold_journal(path: &std::path::Path) {
    let path = path.to_path_buf();
    let folded = tokio::task::spawn_blocking(move || {
        let mut c = open_writer(&path)?;
        journal::fold(&path, &mut c)
    })
    .await;
    match folded {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!("{n} rows folded in from the ledger's journal"),
        Ok(Err(e)) => tracing::warn!("the ledger's journal could not be folded in yet: {e}"),
        Err(e) => tracing::warn!("the ledger's journal could not be folded in: {e}"),
    }
}

fn open_writer(path: &std::path::Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    let c = rusqlite::Connection::open(path)?;
    c.execute_batch(crate::db::SQLITE_PRAGMAS)?;
    Ok(c)
}

/// INSERT of `rows` admitted requests (status `unfinished`).
fn begin_sql(rows: usize) -> String {
    format!(
        "INSERT INTO requests (id, user_name, groups, model, admitted_ms, status) VALUES {}",
        placeholders(rows, 5, "'unfinished'")
    ) + " ON CONFLICT (id) DO NOTHING"
}

/// Upsert of `rows` finished requests (a row written before its begin, or
/// without one, is complete on its own).
fn finish_sql(rows: usize) -> String {
    format!(
        "INSERT INTO requests (id, user_name, groups, model, admitted_ms, status, prompt_tokens, \
         completion_tokens, queue_ms, ttft_ms, duration_ms) VALUES {} \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, prompt_tokens = excluded.prompt_tokens, \
         completion_tokens = excluded.completion_tokens, queue_ms = excluded.queue_ms, \
         ttft_ms = excluded.ttft_ms, duration_ms = excluded.duration_ms",
        placeholders(rows, 11, "")
    )
}

/// One transaction for the whole batch: all of it is written or none.
/// First rows whose request ends in the same batch are left out.
fn write_batch_sqlite(
    conn: &mut rusqlite::Connection,
    begins: &[RequestRecord],
    finishes: &[Finish],
) -> Result<(), rusqlite::Error> {
    let finished: std::collections::HashSet<&str> =
        finishes.iter().map(|f| f.record.id.as_str()).collect();
    let tx = conn.transaction()?;
    {
        // `$n` parameters are numbered in order of appearance, so the
        // one-row statements bind by position as sqlx's do.
        let mut begin = tx.prepare_cached(&begin_sql(1))?;
        let mut finish = tx.prepare_cached(&finish_sql(1))?;
        for r in begins.iter().filter(|r| !finished.contains(r.id.as_str())) {
            begin.execute(rusqlite::params![
                r.id,
                r.user,
                r.groups.join(","),
                r.model,
                r.admitted_ms
            ])?;
        }
        for f in finishes {
            let r = &f.record;
            finish.execute(rusqlite::params![
                r.id,
                r.user,
                r.groups.join(","),
                r.model,
                r.admitted_ms,
                f.status.as_db(),
                f.prompt_tokens,
                f.completion_tokens,
                f.queue_ms,
                f.ttft_ms,
                f.duration_ms
            ])?;
        }
    }
    tx.commit()
}

/// A commit's rows: the first rows (waiting and sent) of requests whose
/// final row is not in it, and the final rows (which are complete rows on
/// their own).
fn rows<'a>(
    waiting: &'a [RequestRecord],
    batch: &'a [(Op, Option<Ack>)],
) -> (Vec<&'a RequestRecord>, Vec<&'a Finish>) {
    let finishes: Vec<&Finish> = batch
        .iter()
        .filter_map(|(op, _)| match op {
            Op::Finish(f) => Some(f),
            Op::Begin(_) | Op::Flush => None,
        })
        .collect();
    let finished: std::collections::HashSet<&str> =
        finishes.iter().map(|f| f.record.id.as_str()).collect();
    let begins = waiting
        .iter()
        .chain(batch.iter().filter_map(|(op, _)| match op {
            Op::Begin(r) => Some(r),
            Op::Finish(_) | Op::Flush => None,
        }))
        .filter(|r| !finished.contains(r.id.as_str()))
        .collect();
    (begins, finishes)
}

/// A batch is at most two statements, each atomic on its own: one
/// multi-row INSERT of the admitted requests, one multi-row upsert of the
/// finished ones. Few round trips to the database whatever the load.
async fn write_batch(
    conn: &mut sqlx::AnyConnection,
    waiting: &[RequestRecord],
    batch: &[(Op, Option<Ack>)],
) -> Result<(), StoreError> {
    let (begins, finishes) = rows(waiting, batch);
    if !begins.is_empty() {
        let sql = begin_sql(begins.len());
        let mut q = sqlx::query(&sql);
        for r in &begins {
            q = q
                .bind(&r.id)
                .bind(&r.user)
                .bind(r.groups.join(","))
                .bind(&r.model)
                .bind(r.admitted_ms);
        }
        q.execute(&mut *conn).await?;
    }
    if !finishes.is_empty() {
        let sql = finish_sql(finishes.len());
        let mut q = sqlx::query(&sql);
        for f in &finishes {
            let r = &f.record;
            q = q
                .bind(&r.id)
                .bind(&r.user)
                .bind(r.groups.join(","))
                .bind(&r.model)
                .bind(r.admitted_ms)
                .bind(f.status.to_string())
                .bind(f.prompt_tokens)
                .bind(f.completion_tokens)
                .bind(f.queue_ms)
                .bind(f.ttft_ms)
                .bind(f.duration_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `($1, $2, ..., EXTRA), (...)` for `rows` rows of `cols` parameters.
fn placeholders(rows: usize, cols: usize, extra: &str) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            n += 1;
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&n.to_string());
        }
        if !extra.is_empty() {
            out.push_str(", ");
            out.push_str(extra);
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Role, User};

    async fn temp_store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("aula-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open_in(&dir).await.unwrap(), dir)
    }

    #[test]
    fn request_ids_sort_by_time_and_differ() {
        let a = new_request_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_request_id();
        let c = new_request_id();
        for id in [&a, &b, &c] {
            assert_eq!(id.len(), 20, "{id}");
            assert!(id.bytes().all(|x| x.is_ascii_alphanumeric()), "{id}");
        }
        assert!(a < b, "{a} {b}");
        assert_ne!(b, c);
        // The first 8 characters are the time: 1970 is all zeros, and
        // today's prefix is above any earlier millisecond's.
        assert!(a[..8] > *"00000000" && a[..8] <= b[..8]);
    }

    /// A first row is written within `BEGIN_WITHIN` though nothing else is.
    #[tokio::test]
    async fn a_first_row_is_written_without_another_write() {
        let (store, dir) = temp_store("first-row").await;
        let ledger = Ledger::start(store.clone());
        let rec = RequestRecord {
            id: new_request_id(),
            user: "al".into(),
            groups: vec![],
            model: "m".into(),
            admitted_ms: 1000,
        };
        ledger.begin(rec).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while store.unfinished_count().await.unwrap() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first row was never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        ledger.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn ledger_round_trip() {
        let (store, dir) = temp_store("ledger").await;
        let ledger = Ledger::start(store.clone());
        for i in 0..3 {
            ledger
                .begin(RequestRecord {
                    id: format!("r{i}"),
                    user: if i == 2 { "bo".into() } else { "al".into() },
                    groups: vec!["cs101".into(), "lab".into()],
                    model: "m".into(),
                    admitted_ms: 1000 + i,
                })
                .await
                .unwrap();
        }
        for i in 0..2 {
            ledger
                .finish(Finish {
                    record: RequestRecord {
                        id: format!("r{i}"),
                        user: "al".into(),
                        groups: vec!["cs101".into(), "lab".into()],
                        model: "m".into(),
                        admitted_ms: 1000 + i,
                    },
                    status: Outcome::Ok,
                    prompt_tokens: Some(10),
                    completion_tokens: Some(5),
                    queue_ms: 2.0,
                    ttft_ms: Some(4.0),
                    duration_ms: 9.0,
                })
                .await
                .unwrap();
        }
        // Durable (in the journal) when `finish` returns; in the database
        // after a flush.
        ledger.flush().await.unwrap();
        let by_user = store.usage(UsageBy::User, 0).await.unwrap();
        assert_eq!(by_user.len(), 2);
        assert_eq!(
            (by_user[0].requests, by_user[0].ok, by_user[0].prompt_tokens),
            (2, 2, 20)
        );
        assert_eq!((by_user[1].key.as_str(), by_user[1].unfinished), ("bo", 1));
        let by_group = store.usage(UsageBy::Group, 0).await.unwrap();
        assert_eq!(
            by_group.iter().map(|r| r.requests).collect::<Vec<_>>(),
            vec![3, 3]
        );
        assert_eq!(
            store.usage(UsageBy::Model, 1002).await.unwrap()[0].requests,
            1
        );
        assert_eq!(store.tokens_by_user_since(0).await.unwrap()["al"], 30);
        assert_eq!(store.unfinished_count().await.unwrap(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Usage read through the daily rollups equals usage read from the
    /// raw rows, for every grouping and window, before and after rolling.
    #[tokio::test]
    async fn rollups_answer_what_the_raw_ledger_answers() {
        let (store, dir) = temp_store("rollup").await;
        let ledger = Ledger::start(store.clone());
        let day = 86_400_000i64;
        let d0 = 20_000 * day;
        let mut n = 0;
        for (d, user, model, status) in [
            (0, "al", "m", Outcome::Ok),
            (0, "al", "m", Outcome::Ok),
            (0, "bo", "n", Outcome::Error(500)),
            (1, "al", "n", Outcome::Ok),
            (2, "bo", "m", Outcome::Ok),
            (3, "al", "m", Outcome::Ok),
        ] {
            n += 1;
            let record = RequestRecord {
                id: format!("r{n}"),
                user: user.into(),
                groups: if user == "al" {
                    vec!["cs101".into()]
                } else {
                    vec![]
                },
                model: model.into(),
                admitted_ms: d0 + d * day + 3_600_000 * n,
            };
            ledger.begin(record.clone()).await.unwrap();
            ledger
                .finish(Finish {
                    record,
                    status,
                    prompt_tokens: Some(10 * n),
                    completion_tokens: Some(n),
                    queue_ms: n as f64,
                    ttft_ms: (n % 2 == 0).then_some(2.0 * n as f64),
                    duration_ms: 9.0,
                })
                .await
                .unwrap();
        }
        ledger.flush().await.unwrap();
        let windows = [0, d0, d0 + day, d0 + 2 * day, d0 + 3 * day, d0 + day + 5];
        let mut before = Vec::new();
        for by in [UsageBy::User, UsageBy::Group, UsageBy::Model] {
            for since in windows {
                before.push(store.usage(by, since).await.unwrap());
                before.push(store.usage_for(by, since, Some("al")).await.unwrap());
            }
        }
        assert_eq!(store.rolled_through_day().await.unwrap(), -1);
        // Day 3 has not ended: days 0..=2 are rolled (and a second call rolls nothing).
        let now = d0 + 3 * day + ROLLUP_MARGIN_MS + 1;
        assert!(store.roll_up_usage(now).await.unwrap() > 0);
        assert_eq!(store.rolled_through_day().await.unwrap(), 20_002);
        assert_eq!(store.roll_up_usage(now).await.unwrap(), 0);
        let mut after = Vec::new();
        for by in [UsageBy::User, UsageBy::Group, UsageBy::Model] {
            for since in windows {
                after.push(store.usage(by, since).await.unwrap());
                after.push(store.usage_for(by, since, Some("al")).await.unwrap());
            }
        }
        assert_eq!(before, after);
        let al_all = store.usage_for(UsageBy::User, 0, Some("al")).await.unwrap();
        assert_eq!((al_all.len(), al_all[0].requests), (1, 4));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A finished row is in the journal when `finish` returns, though the
    /// database is locked; a copy of the files as a crash would leave them
    /// (the database without the row, the journal) opens with the row; the
    /// writer moves the row in once the lock is gone, and deletes the
    /// journal.
    #[tokio::test]
    async fn a_finished_row_survives_a_locked_database_and_a_crash() {
        let (store, dir) = temp_store("journal").await;
        let ledger = Ledger::start(store.clone());
        let db = dir.join("aula.db");
        let locker = rusqlite::Connection::open(&db).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let record = RequestRecord {
            id: new_request_id(),
            user: "al".into(),
            groups: vec!["cs101".into()],
            model: "m".into(),
            admitted_ms: 1000,
        };
        ledger.begin(record.clone()).await.unwrap();
        ledger
            .finish(Finish {
                record,
                status: Outcome::Ok,
                prompt_tokens: Some(7),
                completion_tokens: Some(3),
                ..Default::default()
            })
            .await
            .unwrap();
        // The writer tries, and fails on the lock.
        assert!(ledger.flush().await.is_err());
        // What a crash now would leave: the database and the journal.
        let copy = dir.join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        assert_eq!(journal::segments(&db).len(), 1, "one journal segment");
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("aula.db") {
                std::fs::copy(e.path(), copy.join(&name)).unwrap();
            }
        }
        let reopened = Store::open_in(&copy).await.unwrap();
        assert_eq!(reopened.tokens_by_user_since(0).await.unwrap()["al"], 10);
        // No journal of this process writes to the copy: its segment was
        // folded and deleted, and opening again counts the row once.
        assert_eq!(journal::segments(&copy.join("aula.db")).len(), 0);
        let again = Store::open_in(&copy).await.unwrap();
        assert_eq!(again.usage(UsageBy::User, 0).await.unwrap()[0].requests, 1);
        drop(locker);
        ledger.flush().await.unwrap();
        assert_eq!(store.tokens_by_user_since(0).await.unwrap()["al"], 10);
        assert_eq!(store.unfinished_count().await.unwrap(), 0);
        assert_eq!(
            journal::segments(&db).len(),
            0,
            "the journal is deleted once its rows are in"
        );
        ledger.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Two ledgers on one database in one process: the first one ending
    /// leaves the other's journal in use (a fold must not delete segments
    /// it still appends to); the last one ending frees them.
    #[tokio::test]
    async fn a_journal_stays_in_use_while_any_ledger_on_its_database_lives() {
        let (store, dir) = temp_store("two-ledgers").await;
        let db = store.sqlite_path().unwrap().to_path_buf();
        let pid = std::process::id();
        let a = Ledger::start(store.clone());
        let b = Ledger::start(store.clone());
        assert!(journal::in_use(&db, pid));
        a.close().await;
        drop(a);
        assert!(journal::in_use(&db, pid), "the second ledger still writes");
        b.close().await;
        drop(b);
        assert!(!journal::in_use(&db, pid));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// While the database cannot take rows, at most `MAX_BACKLOG` wait for
    /// it: the next request is refused before it runs, and once the
    /// database is free every row waiting goes in.
    #[tokio::test]
    async fn rows_waiting_for_a_locked_database_are_bounded() {
        let (store, dir) = temp_store("backlog").await;
        let ledger = Ledger::start(store.clone());
        let locker = rusqlite::Connection::open(dir.join("aula.db")).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let rec = |i: usize| RequestRecord {
            id: format!("r{i:06}"),
            user: "al".into(),
            model: "m".into(),
            admitted_ms: 1000,
            ..Default::default()
        };
        for i in 0..journal::MAX_BACKLOG {
            ledger.begin(rec(i)).await.unwrap();
        }
        let e = ledger.begin(rec(journal::MAX_BACKLOG)).await.unwrap_err();
        assert!(e.contains("rows wait for the database"), "{e}");
        drop(locker);
        // A try that was failing as the lock went may still report it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while let Err(e) = ledger.flush().await {
            assert!(std::time::Instant::now() < deadline, "{e}");
        }
        assert_eq!(
            store.unfinished_count().await.unwrap(),
            journal::MAX_BACKLOG as i64
        );
        ledger.begin(rec(journal::MAX_BACKLOG + 1)).await.unwrap();
        ledger.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn keys_and_users() {
        let (store, dir) = temp_store("keys").await;
        let g0 = store.auth_generation().await.unwrap();
        let ada = User {
            name: "ada".into(),
            role: Role::Teacher,
            groups: vec!["cs101".into()],
        };
        store.put_user(&ada, false).await.unwrap();
        assert!(store.put_user(&ada, false).await.is_err());
        assert!(store.create_key("nobody", None).await.is_err());
        let (info, secret) = store.create_key("ada", None).await.unwrap();
        assert!(secret.starts_with("aula-") && secret.len() == 45);
        let (k, u) = store.check_key(&secret).await.unwrap().unwrap();
        assert_eq!((k.id.as_str(), u), (info.id.as_str(), ada.clone()));
        assert_eq!(
            store.check_key("aula-nope").await.unwrap().unwrap_err(),
            crate::identity::KeyProblem::Unknown
        );
        store.revoke(&info.id).await.unwrap();
        assert_eq!(
            store.check_key(&secret).await.unwrap().unwrap_err(),
            crate::identity::KeyProblem::Revoked
        );
        let (_, s2) = store.create_key("ada", Some(0.000_000_01)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(
            store.check_key(&s2).await.unwrap().unwrap_err(),
            crate::identity::KeyProblem::Expired
        );
        assert!(store.auth_generation().await.unwrap() > g0);
        // The secret itself is nowhere in the database.
        let raw = std::fs::read(dir.join("aula.db")).unwrap();
        let wal = std::fs::read(dir.join("aula.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
