//! The Files API's object, typed.

use aula_store::FileRecord;
use serde::Serialize;

/// A file's (deprecated) `status`: Aula's files are processed when the
/// upload ends; they neither fail later nor expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileObjectStatus {
    Processed,
}

/// A file, as OpenAI's description writes it (no `status_details` or
/// `expires_at`: the description has no null for either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileObject {
    pub id: String,
    pub object: &'static str,
    pub bytes: i64,
    pub created_at: i64,
    pub filename: String,
    pub purpose: String,
    pub status: FileObjectStatus,
}

impl From<&FileRecord> for FileObject {
    fn from(f: &FileRecord) -> FileObject {
        FileObject {
            id: f.id.clone(),
            object: "file",
            bytes: f.bytes,
            created_at: f.created_ms / 1000,
            filename: f.filename.clone(),
            purpose: f.purpose.clone(),
            status: FileObjectStatus::Processed,
        }
    }
}
