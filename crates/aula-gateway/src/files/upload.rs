//! `POST /v1/files`: an upload read as it arrives, within the window, the
//! caller's allowance and the upload limits; refused uploads drained within
//! bounds.

use super::*;
use crate::auth::Caller;
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_store::FileRecord;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The longest an upload may go without sending a byte.
pub const UPLOAD_IDLE: Duration = crate::body::IDLE;

pub(super) const MB: u64 = 1_000_000;

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
pub(super) struct Windowed<S> {
    pub(super) inner: S,
    pub(super) read: u64,
    pub(super) drained: usize,
    pub(super) window: Window,
    /// When draining began, and the wait that keeps it within its rate.
    pub(super) drain_started: Option<tokio::time::Instant>,
    pub(super) pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Windowed<S> {
    pub(super) fn new(inner: S, window: Window) -> Windowed<S> {
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
pub(super) struct Window(Arc<WindowState>);

#[derive(Default)]
pub(super) struct WindowState {
    pub(super) handed_on: std::sync::atomic::AtomicU64,
    pub(super) draining: std::sync::atomic::AtomicBool,
}

impl Window {
    pub(super) fn handed_on(&self, n: usize) {
        self.0
            .handed_on
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    pub(super) fn allows(&self, read: u64) -> bool {
        read <= self.0.handed_on.load(std::sync::atomic::Ordering::Relaxed) + UPLOAD_WINDOW
    }
    /// From now on the body is read and dropped, not parsed.
    pub(super) fn drain(&self) {
        self.0
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    pub(super) fn draining(&self) -> bool {
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

/// A temporary upload, removed unless it was kept.
pub(super) struct Partial {
    pub(super) path: PathBuf,
    pub(super) kept: bool,
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
pub(super) struct Allowance {
    pub(super) max_file: u64,
    pub(super) storage: u64,
    pub(super) used: u64,
}

impl Allowance {
    pub(super) fn check(&self, received: u64) -> Result<(), ApiError> {
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
pub(super) async fn receive(
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

pub(super) fn multipart_error(e: multer::Error) -> ApiError {
    ApiError::invalid(format!("the upload is not valid multipart/form-data: {e}"))
}

/// A small text field (`purpose`), at most 64 bytes.
pub(super) async fn small_text(
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

pub(super) fn check_purpose(p: &str) -> Result<(), ApiError> {
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
pub(super) fn clean_filename(name: Option<&str>) -> String {
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
pub(super) async fn read_fields(
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
pub(super) async fn drain(
    multipart: &mut multer::Multipart<'static>,
    window: &Window,
    declared: Option<u64>,
) {
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
) -> Result<Json<FileObject>, ApiError> {
    upload_inner(&st, id, &headers, body).await.map(Json)
}

pub(super) async fn upload_inner(
    st: &Handle,
    id: Identity,
    headers: &HeaderMap,
    body: Body,
) -> Result<FileObject, ApiError> {
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
    Ok(FileObject::from(&record))
}
