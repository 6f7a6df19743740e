//! The Files API (`/v1/files`, OpenAI's shapes): upload, list, retrieve,
//! download, delete. The rules it enforces:
//!
//! * **A file belongs to its uploader.** Anyone else — another student, a
//!   teacher, an admin — is told it does not exist (404), never that it is
//!   someone else's.
//! * **Bounded, streamed uploads.** An upload is `multipart/form-data` with a
//!   `file` and a `purpose`; the file is streamed to a temporary file in the
//!   data directory, never held whole in memory. It is refused as soon as it
//!   passes the user's `max_file_mb` (413) or would take their files past
//!   `file_storage_mb` (429), each message naming the numbers. A client that
//!   goes quiet for [`UPLOAD_IDLE`] is cut off. The multipart reader is let
//!   [`UPLOAD_WINDOW`] bytes ahead of the field data it has handed on, no
//!   more: a body whose boundary or part headers never come holds that much
//!   memory until it times out, not the whole body.
//! * **At most [`MAX_UPLOADS_AT_ONCE`] uploads of one user at once** (429
//!   `upload_concurrency`): slow uploads hold connections, which all share.
//! * **The quota holds under concurrent uploads:** a user's uploads stream in
//!   parallel but complete one at a time, each checked against what is stored.
//! * **Nothing half-done is left behind.** The bytes are complete on disk
//!   (written, synced, renamed into place) before the record is written; a
//!   refused or broken upload removes its temporary file; deleting removes
//!   the record before the bytes. At start, temporary files and bytes with no
//!   record (a crash between the two steps) are removed.
//! * **Purposes:** `assistants`, `user_data` and `fine-tune`; a `fine-tune`
//!   file is checked at upload (JSON Lines of chat examples: the error names
//!   the line), so a bad one is refused before any job names it.

use crate::auth::Caller;
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_store::{FileQuery, FileRecord};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The longest an upload may go without sending a byte.
pub const UPLOAD_IDLE: Duration = crate::body::IDLE;

/// What the files routes hold: the request path's services and the
/// uploaded files on disk.
#[derive(Clone)]
pub struct Handle {
    pub gw: Arc<crate::pipeline::Gateway>,
    pub files: Arc<Files>,
}
/// Most files one list answers.
pub const MAX_LIST: i64 = 10_000;
/// Uploads one user may have under way at once (slow uploads hold
/// connections, which every user shares).
pub const MAX_UPLOADS_AT_ONCE: usize = 4;
/// Purposes a file may be uploaded for.
pub const PURPOSES: [&str; 3] = ["assistants", "user_data", "fine-tune"];

const MB: u64 = 1_000_000;

/// How far the multipart reader may read an upload's body ahead of the
/// field data it has handed on (preamble, boundaries, part headers and
/// read-ahead together).
pub const UPLOAD_WINDOW: u64 = 64 << 10;

/// An upload's body as the multipart reader sees it: no more than
/// [`UPLOAD_WINDOW`] bytes past what has been handed on as field data
/// ([`Window::handed_on`]). Past it the stream stops reading (the client is
/// held back by TCP) until field data is taken, and an upload whose headers
/// never end goes quiet and times out. Once the upload is refused
/// ([`Window::drain`]), the stream reads and drops the rest of the body
/// itself (at most [`crate::body::DRAIN_MAX_BYTES`], no faster than
/// [`crate::body::DRAIN_BYTES_PER_S`]) and ends: the multipart reader holds
/// none of it.
struct Windowed<S> {
    inner: S,
    read: u64,
    drained: usize,
    window: Window,
    /// When draining began, and the wait that keeps it within its rate.
    drain_started: Option<tokio::time::Instant>,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Windowed<S> {
    fn new(inner: S, window: Window) -> Windowed<S> {
        Windowed {
            inner,
            read: 0,
            drained: 0,
            window,
            drain_started: None,
            pause: None,
        }
    }
}

/// Shared between [`Windowed`] and the code that reads the fields.
#[derive(Clone, Default)]
struct Window(Arc<WindowState>);

#[derive(Default)]
struct WindowState {
    handed_on: std::sync::atomic::AtomicU64,
    draining: std::sync::atomic::AtomicBool,
}

impl Window {
    fn handed_on(&self, n: usize) {
        self.0
            .handed_on
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    fn allows(&self, read: u64) -> bool {
        read <= self.0.handed_on.load(std::sync::atomic::Ordering::Relaxed) + UPLOAD_WINDOW
    }
    /// From now on the body is read and dropped, not parsed.
    fn drain(&self) {
        self.0
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    fn draining(&self) -> bool {
        self.0.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<S, E> futures::Stream for Windowed<S>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    type Item = Result<bytes::Bytes, E>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.window.draining() {
            let started = *self
                .drain_started
                .get_or_insert_with(tokio::time::Instant::now);
            loop {
                if let Some(pause) = self.pause.as_mut() {
                    std::task::ready!(std::future::Future::poll(pause.as_mut(), cx));
                    self.pause = None;
                }
                match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
                    std::task::Poll::Ready(Some(Ok(chunk))) => {
                        self.drained += chunk.len();
                        if self.drained > crate::body::DRAIN_MAX_BYTES {
                            return std::task::Poll::Ready(None);
                        }
                        if let Some(due) = crate::body::drain_pause(self.drained, started) {
                            self.pause = Some(Box::pin(tokio::time::sleep_until(due)));
                        }
                    }
                    std::task::Poll::Ready(_) => return std::task::Poll::Ready(None),
                    std::task::Poll::Pending => return std::task::Poll::Pending,
                }
            }
        }
        // The multipart reader polls this before handing on what it holds:
        // saying "nothing yet" lets it do so. It polls again when asked for
        // more, so no wake-up is lost; if it holds a window of bytes that
        // are not field data, the upload stalls and times out.
        if !self.window.allows(self.read) {
            return std::task::Poll::Pending;
        }
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &next {
            self.read += chunk.len() as u64;
        }
        next
    }
}

/// Where uploaded files live: `files/` in the data directory, one file per id.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
    /// One user's uploads complete one at a time (the final quota check and
    /// the record together): users are spread over these by name.
    commits: Arc<Vec<tokio::sync::Mutex<()>>>,
    /// Uploads under way, per user.
    uploading: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// One upload under way, counted against its user until dropped.
struct Uploading {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    user: String,
}

impl Drop for Uploading {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
        crate::metrics::uploads_under_way(counts.values().sum());
    }
}

impl Files {
    pub fn new(dir: PathBuf) -> Files {
        Files {
            dir,
            commits: Arc::new((0..64).map(|_| tokio::sync::Mutex::new(())).collect()),
            uploading: Default::default(),
        }
    }

    /// Count one more upload of `user`, refused past [`MAX_UPLOADS_AT_ONCE`]
    /// (before its body is read).
    fn begin_upload(&self, user: &str) -> Result<Uploading, ApiError> {
        let mut counts = self.uploading.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(user.to_string()).or_insert(0);
        if *n >= MAX_UPLOADS_AT_ONCE {
            return Err(ApiError::RateLimited {
                message: format!(
                    "you already have {MAX_UPLOADS_AT_ONCE} uploads under way; wait for one to finish"
                ),
                code: "upload_concurrency",
                retry_after_s: 5,
            });
        }
        *n += 1;
        crate::metrics::uploads_under_way(counts.values().sum());
        Ok(Uploading {
            counts: self.uploading.clone(),
            user: user.to_string(),
        })
    }

    fn commit_lock(&self, user: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        &self.commits[(h.finish() % self.commits.len() as u64) as usize]
    }

    pub(crate) fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Remove what a crash may have left: temporary uploads, and bytes whose
    /// record was never written.
    pub async fn sweep(&self, store: &aula_store::Store) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let orphan = if name.starts_with(".upload-") {
                true
            } else if name.starts_with("file-") {
                matches!(store.file(&name).await, Ok(None))
            } else {
                false
            };
            if orphan {
                tracing::info!("removing {name} from the file store: it was never completed");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A new file id: `file-` and 24 random letters and digits.
fn file_id() -> String {
    format!("file-{}", crate::random_id(24))
}

/// A file as OpenAI's API shows it.
fn file_object(f: &FileRecord) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_ms / 1000,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        // No `status_details` or `expires_at`: OpenAI's description has no
        // null for either, and Aula's files neither fail nor expire.
    })
}

pub(crate) fn store_error(e: aula_store::StoreError) -> ApiError {
    ApiError::Unavailable(format!("the file store cannot be read or written: {e}"))
}

/// The caller's own file, or 404 (also for someone else's).
pub(crate) async fn own_file(
    store: &aula_store::Store,
    id: &Identity,
    file_id: &str,
) -> Result<FileRecord, ApiError> {
    match store.file(file_id).await.map_err(store_error)? {
        Some(f) if f.owner == id.name => Ok(f),
        _ => Err(ApiError::NotFound(format!("no file `{file_id}`"))),
    }
}

/// A temporary upload, removed unless it was kept.
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What one upload may take: per file and, with what the user already
/// stores, in all.
struct Allowance {
    max_file: u64,
    storage: u64,
    used: u64,
}

impl Allowance {
    fn check(&self, received: u64) -> Result<(), ApiError> {
        if received > self.max_file {
            return Err(ApiError::PayloadTooLarge(format!(
                "the file is larger than the {} MB you may upload at once",
                self.max_file / MB
            )));
        }
        if self.used + received > self.storage {
            return Err(ApiError::RateLimited {
                message: format!(
                    "your files may take {} MB together; {:.1} MB are stored, which leaves {:.1} MB, and this upload is larger; delete some files first",
                    self.storage / MB,
                    self.used as f64 / MB as f64,
                    self.storage.saturating_sub(self.used) as f64 / MB as f64,
                ),
                code: "storage_quota",
                retry_after_s: 60,
            });
        }
        Ok(())
    }
}

/// Write one multipart field to `partial`, within the allowance.
async fn receive(
    field: &mut multer::Field<'_>,
    partial: &Partial,
    allow: &Allowance,
    window: &Window,
) -> Result<u64, ApiError> {
    let io = |e: std::io::Error| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            ApiError::Unavailable("the server's disk is full; the file was not stored".into())
        } else {
            ApiError::Internal(format!("writing the upload: {e}"))
        }
    };
    let mut out = tokio::fs::File::create(&partial.path).await.map_err(io)?;
    let mut received: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(UPLOAD_IDLE, field.chunk()).await {
            Err(_) => {
                return Err(ApiError::RequestTimeout(format!(
                    "the upload sent nothing for {} s",
                    UPLOAD_IDLE.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(multipart_error(e)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(c))) => c,
        };
        window.handed_on(chunk.len());
        received += chunk.len() as u64;
        allow.check(received)?;
        out.write_all(&chunk).await.map_err(io)?;
    }
    out.sync_all().await.map_err(io)?;
    Ok(received)
}

fn multipart_error(e: multer::Error) -> ApiError {
    ApiError::invalid(format!("the upload is not valid multipart/form-data: {e}"))
}

/// A small text field (`purpose`), at most 64 bytes.
async fn small_text(
    field: &mut multer::Field<'_>,
    name: &str,
    window: &Window,
) -> Result<String, ApiError> {
    let mut text = Vec::new();
    while let Some(c) = tokio::time::timeout(UPLOAD_IDLE, field.chunk())
        .await
        .map_err(|_| ApiError::RequestTimeout("the upload went quiet".into()))?
        .map_err(multipart_error)?
    {
        window.handed_on(c.len());
        text.extend_from_slice(&c);
        if text.len() > 64 {
            return Err(ApiError::invalid_param(
                name,
                format!("`{name}` is too long"),
            ));
        }
    }
    String::from_utf8(text)
        .map_err(|_| ApiError::invalid_param(name, format!("`{name}` is not text")))
}

fn check_purpose(p: &str) -> Result<(), ApiError> {
    if PURPOSES.contains(&p) {
        return Ok(());
    }
    Err(ApiError::invalid_param(
        "purpose",
        format!(
            "`purpose` must be one of {}; got `{p}`",
            PURPOSES.join(", ")
        ),
    ))
}

/// The name a file is shown under: its last path component, printable,
/// at most 255 characters.
fn clean_filename(name: Option<&str>) -> String {
    let base = name
        .unwrap_or("upload")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("upload");
    let clean: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    if clean.trim().is_empty() {
        "upload".into()
    } else {
        clean
    }
}

/// The upload's `purpose` and `file` (its name and size on disk).
async fn read_fields(
    multipart: &mut multer::Multipart<'static>,
    partial: &Partial,
    allow: &Allowance,
    window: &Window,
) -> Result<(Option<String>, Option<(String, u64)>), ApiError> {
    let (mut purpose, mut file) = (None, None);
    while let Some(mut field) = tokio::time::timeout(UPLOAD_IDLE, multipart.next_field())
        .await
        .map_err(|_| ApiError::RequestTimeout("the upload went quiet".into()))?
        .map_err(multipart_error)?
    {
        match field.name() {
            Some("purpose") if purpose.is_none() => {
                purpose = Some(small_text(&mut field, "purpose", window).await?)
            }
            Some("file") if file.is_none() => {
                let name = clean_filename(field.file_name());
                let bytes = receive(&mut field, partial, allow, window).await?;
                file = Some((name, bytes));
            }
            Some(other @ ("purpose" | "file")) => {
                return Err(ApiError::invalid_param(
                    other,
                    format!("`{other}` is given twice"),
                ));
            }
            other => {
                let other = other.unwrap_or("(unnamed)").to_string();
                return Err(ApiError::invalid_param(
                    &other,
                    format!("unknown field `{other}`"),
                ));
            }
        }
    }
    Ok((purpose, file))
}

/// Read and drop what is left of a refused upload, as
/// [`crate::body::drain`] does for other bodies, within the same bounds:
/// the body stream drops what it reads (see [`Windowed`]), and the
/// multipart reader is polled until that stream ends.
async fn drain(multipart: &mut multer::Multipart<'static>, window: &Window, declared: Option<u64>) {
    let Some(_permit) = crate::body::DrainPermit::try_take(declared) else {
        return;
    };
    window.drain();
    // One poll of the reader drains until the body ends (or its bound):
    // the whole drain is bounded by DRAIN_FOR.
    let rest = async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    };
    let _ = tokio::time::timeout(crate::body::DRAIN_FOR, rest).await;
}

/// `POST /v1/files`.
pub async fn upload(
    State(st): State<Handle>,
    Caller(id): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    upload_inner(&st, id, &headers, body).await.map(Json)
}

async fn upload_inner(
    st: &Handle,
    id: Identity,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    // A refusal before the upload is read still reads (and drops) what the
    // client is sending, within bounds: otherwise it sees a broken pipe
    // instead of the 429 that says why.
    let declared = axum::body::HttpBody::size_hint(&body).exact();
    let _uploading = match st.files.begin_upload(&id.name) {
        Ok(u) => u,
        Err(e) => {
            crate::body::drain(body.into_data_stream(), declared).await;
            return Err(e);
        }
    };
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "send the file as multipart/form-data, with the fields `file` and `purpose`",
            )
        })?;
    let lim = crate::limits::effective(&st.gw.limiter.rules(), &id);
    let allow = Allowance {
        max_file: lim
            .max_file_mb
            .unwrap_or(crate::limits::DEFAULT_MAX_FILE_MB)
            .saturating_mul(MB),
        storage: lim
            .file_storage_mb
            .unwrap_or(crate::limits::DEFAULT_FILE_STORAGE_MB)
            .saturating_mul(MB),
        used: st
            .gw
            .store
            .storage_of(&id.name)
            .await
            .map_err(store_error)?
            .max(0) as u64,
    };
    std::fs::create_dir_all(&st.files.dir)
        .map_err(|e| ApiError::Internal(format!("cannot create the file store: {e}")))?;
    let file_id = file_id();
    let mut partial = Partial {
        path: st.files.dir.join(format!(".upload-{file_id}")),
        kept: false,
    };
    let window = Window::default();
    let body = Windowed::new(body.into_data_stream(), window.clone());
    // Field sizes are checked as the data arrives (`receive`, `small_text`),
    // each with its own answer; the window bounds what is not field data.
    let mut multipart = multer::Multipart::new(body, boundary);
    let (purpose, file) = match read_fields(&mut multipart, &partial, &allow, &window).await {
        Ok(fields) => fields,
        Err(e) => {
            // A client still sending would see a broken connection instead
            // of this answer: read (and drop) the rest first, within bounds.
            drain(&mut multipart, &window, declared).await;
            return Err(e);
        }
    };
    let purpose =
        purpose.ok_or_else(|| ApiError::invalid_param("purpose", "`purpose` is required"))?;
    check_purpose(&purpose)?;
    let (filename, bytes) =
        file.ok_or_else(|| ApiError::invalid_param("file", "`file` is required"))?;
    if bytes == 0 {
        return Err(ApiError::invalid_param("file", "the file is empty"));
    }
    // Another upload of the same user may have finished meanwhile: the
    // quota is checked again against what is stored now, and this upload's
    // record is written before any other of the user's is checked.
    let _commit = st.files.commit_lock(&id.name).lock().await;
    let now = Allowance {
        used: st
            .gw
            .store
            .storage_of(&id.name)
            .await
            .map_err(store_error)?
            .max(0) as u64,
        ..allow
    };
    now.check(bytes)?;
    if purpose == "fine-tune" {
        // A line at a time (one example's memory), off the async workers.
        let path = partial.path.clone();
        tokio::task::spawn_blocking(move || crate::training_file::check_file(&path))
            .await
            .map_err(|e| ApiError::Internal(format!("checking the upload: {e}")))?
            .map_err(|e| ApiError::Internal(format!("reading the upload: {e}")))?
            .map_err(|e| ApiError::invalid_param("file", format!("not a fine-tuning file: {e}")))?;
    }
    std::fs::rename(&partial.path, st.files.path(&file_id))
        .map_err(|e| ApiError::Internal(format!("storing the upload: {e}")))?;
    partial.path = st.files.path(&file_id);
    let record = FileRecord {
        id: file_id,
        owner: id.name.clone(),
        purpose,
        filename,
        bytes: bytes as i64,
        created_ms: aula_store::now_ms(),
    };
    st.gw.store.put_file(&record).await.map_err(store_error)?;
    partial.kept = true;
    Ok(file_object(&record))
}

/// `GET /v1/files`: the caller's files, newest first unless `order=asc`.
pub async fn list(
    State(st): State<Handle>,
    Caller(id): Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = list_query(q.as_deref())?;
    let (files, more) = st
        .gw
        .store
        .files_of(&id.name, &query)
        .await
        .map_err(store_error)?;
    let data: Vec<Value> = files.iter().map(file_object).collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "has_more": more,
        "first_id": files.first().map(|f| f.id.clone()),
        "last_id": files.last().map(|f| f.id.clone()),
    })))
}

/// `purpose`, `limit` (1 to [`MAX_LIST`], default 10,000 as OpenAI's),
/// `after`, `order` (`asc` or `desc`).
fn list_query(q: Option<&str>) -> Result<FileQuery, ApiError> {
    let p = crate::page::Page::parse(
        q,
        &crate::page::Takes {
            keys: &["purpose", "after", "limit", "order"],
            default_limit: MAX_LIST as u64,
            max_limit: MAX_LIST as u64,
        },
    )?;
    Ok(FileQuery {
        purpose: p.purpose,
        after: p.after,
        limit: p.limit as i64,
        ascending: p.ascending,
    })
}

/// `GET /v1/files/{file_id}`.
pub async fn retrieve(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(file_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(file_object(
        &own_file(&st.gw.store, &id, &file_id).await?,
    )))
}

/// `GET /v1/files/{file_id}/content`: the bytes, streamed from disk.
pub async fn content(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(file_id): Path<String>,
) -> Result<Response, ApiError> {
    let f = own_file(&st.gw.store, &id, &file_id).await?;
    let file = tokio::fs::File::open(st.files.path(&f.id))
        .await
        .map_err(|e| match e.kind() {
            // Deleted since its record was read.
            std::io::ErrorKind::NotFound => ApiError::NotFound(format!("no file `{}`", f.id)),
            _ => ApiError::Internal(format!("the file `{}` cannot be read: {e}", f.id)),
        })?;
    let stream = tokio_util::io::ReaderStream::new(file).map(|r| r.map_err(std::io::Error::other));
    let disposition = format!(
        "attachment; filename=\"{}\"",
        f.filename.replace(['"', '\\'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, f.bytes.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `DELETE /v1/files/{file_id}`.
pub async fn delete(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(file_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let f = own_file(&st.gw.store, &id, &file_id).await?;
    // Out of every vector store first: nothing cites a file that is gone.
    for store_id in st
        .gw
        .store
        .stores_with_file(&f.id)
        .await
        .map_err(store_error)?
    {
        st.gw
            .store
            .remove_store_file(&store_id, &f.id)
            .await
            .map_err(store_error)?;
    }
    if !st.gw.store.delete_file(&f.id).await.map_err(store_error)? {
        // Deleted by another request since its record was read.
        return Err(ApiError::NotFound(format!("no file `{}`", f.id)));
    }
    if let Err(e) = std::fs::remove_file(st.files.path(&f.id)) {
        tracing::warn!(
            "the bytes of the deleted file {} could not be removed: {e}",
            f.id
        );
    }
    Ok(Json(json!({"id": f.id, "object": "file", "deleted": true})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_queries_and_allowances() {
        assert_eq!(clean_filename(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_filename(Some("C:\\notes\\week1.pdf")), "week1.pdf");
        assert_eq!(clean_filename(Some("a\u{0}b\nc.txt")), "abc.txt");
        assert_eq!(clean_filename(None), "upload");
        assert_eq!(clean_filename(Some("dir/")), "upload");
        let q = list_query(Some("purpose=assistants&limit=2&order=asc&after=file-x")).unwrap();
        assert_eq!(q.purpose.as_deref(), Some("assistants"));
        assert_eq!((q.limit, q.ascending), (2, true));
        assert_eq!(q.after.as_deref(), Some("file-x"));
        for bad in [
            "limit=0",
            "limit=10001",
            "limit=x",
            "order=up",
            "colour=red",
        ] {
            assert!(list_query(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(list_query(Some("")).unwrap().limit, MAX_LIST);
        let a = Allowance {
            max_file: 10 * MB,
            storage: 15 * MB,
            used: 8 * MB,
        };
        assert!(a.check(5 * MB).is_ok());
        let e = a.check(8 * MB).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(e.to_string().contains("15 MB"), "{e}");
        let e = a.check(11 * MB).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.to_string().contains("10 MB"), "{e}");
        assert!(check_purpose("assistants").is_ok());
        assert!(check_purpose("fine-tune").is_ok());
        assert!(check_purpose("x").is_err());
        assert!(file_id().starts_with("file-") && file_id().len() == 29);
        // Uploads at once, per user, given back when they end.
        let files = Files::new(std::env::temp_dir());
        let held: Vec<Uploading> = (0..MAX_UPLOADS_AT_ONCE)
            .map(|_| files.begin_upload("ada").unwrap())
            .collect();
        let e = files.begin_upload("ada").err().unwrap();
        assert_eq!(e.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(files.begin_upload("bob").is_ok());
        drop(held);
        assert!(files.begin_upload("ada").is_ok());
        assert!(files.uploading.lock().unwrap().is_empty());
    }
}
