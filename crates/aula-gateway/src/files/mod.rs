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
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;

mod upload;
mod wire;

use crate::wire::{Deleted, List};
pub use wire::FileObject;

pub use upload::*;

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
    /// record was never written — only those untouched for [`SWEEP_AFTER`]:
    /// the directory may be shared by several gateways (`[server]
    /// files_dir`), one of which may be receiving that upload now.
    pub async fn sweep(&self, store: &aula_store::Store) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let recent = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < SWEEP_AFTER);
            if recent {
                continue;
            }
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

/// How old an unfinished upload must be before a starting gateway removes it.
pub const SWEEP_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A new file id: `file-` and 24 random letters and digits.
fn file_id() -> String {
    format!("file-{}", crate::random_id(24))
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

/// `GET /v1/files`: the caller's files, newest first unless `order=asc`.
pub async fn list(
    State(st): State<Handle>,
    Caller(id): Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<List<FileObject>>, ApiError> {
    let query = list_query(q.as_deref())?;
    let (files, more) = st
        .gw
        .store
        .files_of(&id.name, &query)
        .await
        .map_err(store_error)?;
    let data: Vec<FileObject> = files.iter().map(FileObject::from).collect();
    Ok(Json(List::of(data, more, |f| &f.id)))
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
) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(FileObject::from(
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
) -> Result<Json<Deleted>, ApiError> {
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
    Ok(Json(Deleted {
        id: f.id,
        object: "file",
        deleted: true,
    }))
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
