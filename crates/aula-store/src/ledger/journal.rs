//! The SQLite ledger: a journal file first, the database a moment later.
//!
//! Rules:
//! - The end of a request is one line appended to a journal segment
//!   (`aula.db-ledger-PID-N`, next to the database) by the request's own
//!   task: one `write(2)`, no hop to another thread. When it returns, the
//!   row survives the gateway being killed, as a commit with SQLite's
//!   `synchronous = NORMAL` did (neither survives a power cut).
//! - One writer thread moves rows into SQLite in batches: when a row has
//!   waited [`BEGIN_WITHIN`], when [`BATCH`] rows wait, or when someone
//!   flushes ([`Journal::flush`]). Nobody waits for it on the request path.
//!   After a batch commits, the segments that held it are deleted.
//! - First rows (admissions) wait in memory for the next batch, as before;
//!   a request that ends before then is written once, whole.
//! - Opening the store folds every segment into the database ([`fold`]), so
//!   any process that opens it (`aula usage`, the next gateway after a
//!   crash) sees every answered request. Segments no journal can still
//!   grow (their process has ended) are deleted after folding; rows are
//!   upserts by id, so folding twice writes nothing new.
//! - Bounds: at most [`MAX_BACKLOG`] rows wait for the database (a locked
//!   or failing one); past that, new requests are refused before they run.
//!   When the journal cannot be written (a full disk), the answer that
//!   could not be recorded is withheld, and each new request must write
//!   its first row to the journal before it runs, so they are refused until
//!   the disk has room again. Either way the row stays queued for the
//!   database (a withheld answer as `error:503`): nothing admitted is
//!   dropped.

use super::{BEGIN_WITHIN, Finish, Outcome, RequestRecord};
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Rows that make the writer commit without waiting for [`BEGIN_WITHIN`].
pub const BATCH: usize = 1024;

/// Rows that may wait for the database before new requests are refused
/// (about 200 bytes of memory each).
pub const MAX_BACKLOG: usize = 100_000;

/// After a failed commit, the next try is this much later.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// How often the writer moves SQLite's WAL into the database (passive: it
/// waits for nobody). Every connection has automatic checkpoints off, so
/// this is the one for the whole database, ledger or not.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// One journal line: a finished row, or a first row (`status` unfinished)
/// written while the journal was failing.
#[derive(serde::Serialize, serde::Deserialize)]
struct Line<'a> {
    id: Cow<'a, str>,
    user: Cow<'a, str>,
    groups: Cow<'a, [String]>,
    model: Cow<'a, str>,
    admitted_ms: i64,
    status: Cow<'a, str>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    queue_ms: f64,
    ttft_ms: Option<f64>,
    duration_ms: f64,
}

fn encode(f: &Finish) -> Vec<u8> {
    let r = &f.record;
    let line = Line {
        id: Cow::Borrowed(&r.id),
        user: Cow::Borrowed(&r.user),
        groups: Cow::Borrowed(&r.groups),
        model: Cow::Borrowed(&r.model),
        admitted_ms: r.admitted_ms,
        status: f.status.as_db(),
        prompt_tokens: f.prompt_tokens,
        completion_tokens: f.completion_tokens,
        queue_ms: f.queue_ms,
        ttft_ms: f.ttft_ms,
        duration_ms: f.duration_ms,
    };
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

fn decode(line: &str) -> Option<Finish> {
    let l: Line = serde_json::from_str(line).ok()?;
    Some(Finish {
        record: RequestRecord {
            id: l.id.into_owned(),
            user: l.user.into_owned(),
            groups: l.groups.into_owned(),
            model: l.model.into_owned(),
            admitted_ms: l.admitted_ms,
        },
        status: Outcome::from_db(&l.status),
        prompt_tokens: l.prompt_tokens,
        completion_tokens: l.completion_tokens,
        queue_ms: l.queue_ms,
        ttft_ms: l.ttft_ms,
        duration_ms: l.duration_ms,
    })
}

/// `aula.db-ledger-` for `/home/aula.db`: every segment's name starts so.
fn prefix(db: &Path) -> String {
    format!(
        "{}-ledger-",
        db.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// The segments next to `db`, oldest first, with the process that wrote each.
pub(super) fn segments(db: &Path) -> Vec<(PathBuf, u32, u64)> {
    let dir = db.parent().unwrap_or(Path::new("."));
    let prefix = prefix(db);
    let mut out: Vec<(PathBuf, u32, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (pid, n) = name.strip_prefix(&prefix)?.split_once('-')?;
            Some((e.path(), pid.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    out.sort_by_key(|&(_, pid, n)| (pid, n));
    out
}

/// The databases whose journal this process is writing, with how many
/// [`Journal`]s live for each (two ledgers on one database in one process
/// must not mark it free when the first ends).
fn live() -> MutexGuard<'static, std::collections::HashMap<PathBuf, usize>> {
    static LIVE: std::sync::OnceLock<Mutex<std::collections::HashMap<PathBuf, usize>>> =
        std::sync::OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Whether the segments process `pid` wrote for `db` may still grow (so
/// are its own to delete): this process with a journal open for `db`, or
/// another process that still runs. A gateway restarted with the pid of
/// the one that crashed (PID 1 in a container) deletes the old segments.
pub(super) fn in_use(db: &Path, pid: u32) -> bool {
    if pid == std::process::id() {
        return live().contains_key(db);
    }
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        // No cheap portable check: keep them (folding again is harmless).
        true
    }
}

/// Write every journal row next to `db` into it (one transaction), and
/// delete the segments of processes that no longer run. Returns the rows
/// read. A line cut short (by a crash, or being written as it is read) is
/// skipped: its request's answer had not ended, since a line is written
/// before the answer's end is sent.
pub(crate) fn fold(db: &Path, conn: &mut rusqlite::Connection) -> Result<usize, rusqlite::Error> {
    let found = segments(db);
    if found.is_empty() {
        return Ok(0);
    }
    let mut begins = Vec::new();
    let mut finishes = Vec::new();
    for (path, _, _) in &found {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            match decode(line) {
                Some(f) if f.status == Outcome::Unfinished => begins.push(f.record),
                Some(f) => finishes.push(f),
                // Being written by a running gateway, or cut by a crash.
                None => tracing::debug!(
                    "{}: a ledger journal line cut short, skipped",
                    path.display()
                ),
            }
        }
    }
    let n = begins.len() + finishes.len();
    super::write_batch_sqlite(conn, &begins, &finishes)?;
    for (path, pid, _) in found {
        if !in_use(db, pid) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(n)
}

#[derive(Clone, Default)]
struct Progress {
    /// Rows queued up to this count are in the database.
    committed: u64,
    /// Commits tried.
    attempts: u64,
    /// The last try's error, if it failed.
    error: Option<String>,
}

struct Shared {
    db: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    progress: tokio::sync::watch::Sender<Progress>,
}

#[derive(Default)]
struct State {
    /// The segment being appended to.
    segment: Option<std::fs::File>,
    /// Its number in this process.
    next_segment: u64,
    /// Segments holding rows not yet committed (the current one included).
    written: Vec<PathBuf>,
    begins: Vec<RequestRecord>,
    finishes: Vec<Finish>,
    /// When the oldest row in `begins`/`finishes` was queued.
    since: Option<Instant>,
    /// Rows ever queued (the flush target).
    queued: u64,
    /// Rows queued or retried, not yet in the database.
    backlog: usize,
    flush: bool,
    closing: bool,
    stopped: bool,
    /// The last journal write failed with this.
    journal_error: Option<String>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Append one line to the current segment (a new one after a failure,
    /// so that a partly written line never runs into the next).
    fn append(&self, s: &mut State, line: &[u8]) -> Result<(), String> {
        let result = (|| {
            if s.segment.is_none() {
                let path = loop {
                    let p = self.db.with_file_name(format!(
                        "{}{}-{}",
                        prefix(&self.db),
                        std::process::id(),
                        s.next_segment
                    ));
                    s.next_segment += 1;
                    if !p.exists() {
                        break p;
                    }
                };
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .open(&path)?;
                s.written.push(path);
                s.segment = Some(f);
            }
            match s.segment.as_mut() {
                Some(f) => f.write_all(line),
                None => Ok(()),
            }
        })();
        match result {
            Ok(()) => {
                s.journal_error = None;
                Ok(())
            }
            Err(e) => {
                s.segment = None;
                let msg = format!("the usage ledger cannot be written: its journal: {e}");
                tracing::error!("{msg}");
                s.journal_error = Some(msg.clone());
                Err(msg)
            }
        }
    }

    fn queued(&self, s: &mut State) {
        let pending = s.begins.len() + s.finishes.len();
        if pending == 1 {
            s.since = Some(Instant::now());
            self.wake.notify_one();
        } else if pending >= BATCH {
            self.wake.notify_one();
        }
        s.queued += 1;
        s.backlog += 1;
    }
}

/// Handle to the journal and its writer thread.
pub(super) struct Journal {
    shared: Arc<Shared>,
}

impl Journal {
    pub fn start(db: &Path) -> Journal {
        let (progress, _) = tokio::sync::watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            db: db.to_path_buf(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            progress,
        });
        let spawned = std::thread::Builder::new()
            .name("aula-ledger".into())
            .spawn({
                let shared = shared.clone();
                move || writer(&shared)
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the ledger writer: {e}");
            lock(&shared.state).stopped = true;
        }
        *live().entry(db.to_path_buf()).or_default() += 1;
        Journal { shared }
    }

    /// Queue a first row. Refused when too many rows wait for the database,
    /// or when the journal is failing and this row cannot be written to it.
    pub fn begin(&self, rec: RequestRecord) -> Result<(), String> {
        let sh = &self.shared;
        let mut s = lock(&sh.state);
        if s.stopped {
            return Err("the ledger writer has stopped".into());
        }
        if s.backlog >= MAX_BACKLOG {
            return Err(format!(
                "the usage ledger cannot be written: {} rows wait for the database ({})",
                s.backlog,
                sh.progress
                    .borrow()
                    .error
                    .as_deref()
                    .unwrap_or("it is slow")
            ));
        }
        if s.journal_error.is_some() {
            let line = encode(&Finish {
                record: rec.clone(),
                ..Default::default()
            });
            sh.append(&mut s, &line)?;
        }
        s.begins.push(rec);
        sh.queued(&mut s);
        Ok(())
    }

    /// Append a final row to the journal and queue it for the database.
    /// Err when the journal could not be written (the row is queued anyway).
    pub fn finish(&self, mut f: Finish) -> Result<(), String> {
        let line = encode(&f);
        let sh = &self.shared;
        let mut s = lock(&sh.state);
        let written = sh.append(&mut s, &line);
        if written.is_err() {
            // The caller withholds the answer's end: recorded as what the
            // client got.
            f.status = Outcome::Error(503);
        }
        if !s.stopped {
            s.finishes.push(f);
            sh.queued(&mut s);
        }
        written
    }

    /// Returns once every row queued before it is in the database, or with
    /// the error of a commit tried after it.
    pub async fn flush(&self) -> Result<(), String> {
        let sh = &self.shared;
        let mut rx = sh.progress.subscribe();
        let (target, attempts) = {
            let mut s = lock(&sh.state);
            if s.stopped && s.backlog > 0 {
                return Err("the ledger writer has stopped".into());
            }
            s.flush = true;
            sh.wake.notify_one();
            (s.queued, rx.borrow().attempts)
        };
        let p = rx
            .wait_for(|p| p.committed >= target || (p.attempts > attempts && p.error.is_some()))
            .await
            .map_err(|_| "the ledger writer has stopped".to_string())?
            .clone();
        match p.error {
            Some(e) if p.committed < target => Err(e),
            _ => Ok(()),
        }
    }

    /// Commit what waits and stop the writer. Rows it cannot commit stay in
    /// the journal, for the next open.
    pub async fn close(&self) {
        if let Err(e) = self.flush().await {
            tracing::error!(
                "the ledger could not be written at shutdown (its rows stay in the journal): {e}"
            );
        }
        let mut s = lock(&self.shared.state);
        s.closing = true;
        self.shared.wake.notify_one();
    }
}

/// The last handle gone without [`Journal::close`] (a test, an early
/// exit): the writer commits what waits and ends, instead of sleeping for
/// ever.
impl Drop for Journal {
    fn drop(&mut self) {
        let mut live = live();
        if let Some(n) = live.get_mut(&self.shared.db) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.shared.db);
            }
        }
        drop(live);
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_one();
    }
}

/// The writer thread: waits for a batch to be due, takes it (and the
/// segments holding it), commits it with what a failed try left, then
/// deletes those segments.
fn writer(sh: &Shared) {
    let mut conn: Option<rusqlite::Connection> = None;
    let mut retry_begins: Vec<RequestRecord> = Vec::new();
    let mut retry_finishes: Vec<Finish> = Vec::new();
    let mut retry_segments: Vec<PathBuf> = Vec::new();
    let mut failed_at: Option<Instant> = None;
    let mut last_checkpoint = Instant::now();
    loop {
        let batch = {
            let mut s = lock(&sh.state);
            let due = loop {
                let pending = s.begins.len() + s.finishes.len();
                let retrying = failed_at.is_some();
                if s.closing && pending == 0 && !retrying {
                    s.stopped = true;
                    return;
                }
                let waited = s.since.map(|t| t.elapsed()).unwrap_or_default();
                let urgent = s.flush || s.closing;
                if pending > 0 && (urgent || pending >= BATCH || waited >= BEGIN_WITHIN) {
                    break true;
                }
                let retry_in = failed_at.map(|t| RETRY_AFTER.saturating_sub(t.elapsed()));
                if retrying && (urgent || retry_in == Some(Duration::ZERO)) {
                    break true;
                }
                let checkpoint_in = CHECKPOINT_EVERY.saturating_sub(last_checkpoint.elapsed());
                if checkpoint_in.is_zero() {
                    break false;
                }
                let mut wait = checkpoint_in;
                if pending > 0 {
                    wait = wait.min(BEGIN_WITHIN.saturating_sub(waited));
                }
                if let Some(r) = retry_in {
                    wait = wait.min(r);
                }
                s = sh
                    .wake
                    .wait_timeout(s, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            };
            if !due {
                None
            } else {
                s.flush = false;
                s.since = None;
                // The current segment is closed: rows after this go to a new one.
                s.segment = None;
                Some((
                    std::mem::take(&mut s.begins),
                    std::mem::take(&mut s.finishes),
                    std::mem::take(&mut s.written),
                    s.queued,
                    s.closing,
                ))
            }
        };
        let Some((mut begins, mut finishes, mut segments, upto, closing)) = batch else {
            last_checkpoint = Instant::now();
            let c = match conn.take() {
                Some(c) => Ok(c),
                None => super::open_writer(&sh.db),
            };
            let checkpointed = c.and_then(|c| {
                c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    .map(|()| c)
            });
            match checkpointed {
                Ok(c) => conn = Some(c),
                Err(e) => tracing::debug!("checkpoint: {e}"),
            }
            continue;
        };
        if failed_at.is_some() {
            retry_begins.append(&mut begins);
            retry_finishes.append(&mut finishes);
            retry_segments.append(&mut segments);
            begins = std::mem::take(&mut retry_begins);
            finishes = std::mem::take(&mut retry_finishes);
            segments = std::mem::take(&mut retry_segments);
        }
        let rows = begins.len() + finishes.len();
        let result = (|| {
            if conn.is_none() {
                conn = Some(super::open_writer(&sh.db)?);
            }
            match conn.as_mut() {
                Some(c) => super::write_batch_sqlite(c, &begins, &finishes),
                None => Ok(()),
            }
        })();
        match result {
            Ok(()) => {
                for p in &segments {
                    let _ = std::fs::remove_file(p);
                }
                failed_at = None;
                lock(&sh.state).backlog -= rows;
                sh.progress.send_modify(|p| {
                    p.committed = upto;
                    p.attempts += 1;
                    p.error = None;
                });
            }
            Err(e) => {
                // A busy (locked) database keeps its connection; anything
                // else gets a fresh one next time.
                let busy = matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                );
                if !busy {
                    conn = None;
                }
                let msg = format!("the usage ledger cannot be written: {e}");
                tracing::error!("{msg}");
                sh.progress.send_modify(|p| {
                    p.attempts += 1;
                    p.error = Some(msg);
                });
                if closing {
                    // Shutting down: what could not be written stays in the
                    // journal (first rows of unanswered requests are lost,
                    // as with a crash).
                    lock(&sh.state).stopped = true;
                    return;
                }
                retry_begins = begins;
                retry_finishes = finishes;
                retry_segments = segments;
                failed_at = Some(Instant::now());
            }
        }
    }
}
