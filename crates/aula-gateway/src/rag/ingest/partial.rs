//! A file's work kept across its owner's rate-limit pause (its chunks and
//! the vectors made so far), within a global bound and a per-owner share.

use std::time::{Duration, Instant};

/// The most memory the work of files put back for their owners' rate
/// limits may hold, all together: past it, a file put back starts over.
pub const MAX_PARTIAL_BYTES: usize = 256 << 20;

/// The most of it one owner's files may hold: room for the work of one
/// document of the largest text (64 MB, and its vectors), so one student
/// with a tight rate limit leaves at least half for everyone else.
pub const MAX_PARTIAL_BYTES_PER_OWNER: usize = MAX_PARTIAL_BYTES / 2;

/// Work kept longer than this is dropped (its file was detached or deleted
/// while paused, or is not taken up again): a pause lasts at most
/// [`MAX_PAUSE`], so a file still waiting is taken up well before.
pub(super) const PARTIAL_KEPT_FOR: Duration = Duration::from_secs(3 * 600);

/// A file's chunks, and the vectors of those embedded so far (in order).
pub(crate) struct Partial {
    /// The chunking it was cut with (the store file's, as stored).
    pub(super) chunking: String,
    pub(super) pieces: Vec<aula_rag::chunk::Piece>,
    pub(super) vectors: Vec<Vec<f32>>,
}

impl Partial {
    pub(super) fn bytes(&self) -> usize {
        self.pieces.iter().map(|p| p.text.len() + 32).sum::<usize>()
            + self.vectors.iter().map(|v| 4 * v.len() + 24).sum::<usize>()
    }
}

/// Files' work kept across a rate-limit pause, within [`MAX_PARTIAL_BYTES`]
/// and [`MAX_PARTIAL_BYTES_PER_OWNER`].
#[derive(Default)]
pub(crate) struct PartialWork {
    /// Each file's work, its owner, its size, and when it was kept.
    files: std::collections::HashMap<(String, String), Kept>,
    bytes: usize,
}

pub(super) struct Kept {
    pub(super) work: Partial,
    pub(super) owner: String,
    pub(super) bytes: usize,
    pub(super) at: Instant,
}

impl PartialWork {
    pub(super) fn take(&mut self, key: &(String, String)) -> Option<Partial> {
        let kept = self.files.remove(key)?;
        self.bytes -= kept.bytes;
        Some(kept.work)
    }

    /// Keep `p` for `owner`'s file if it fits both bounds, after dropping
    /// work kept too long; else it is dropped (the file starts over).
    pub(super) fn keep(&mut self, key: (String, String), owner: &str, p: Partial) {
        self.keep_at(key, owner, p, Instant::now());
    }

    pub(super) fn keep_at(&mut self, key: (String, String), owner: &str, p: Partial, now: Instant) {
        let bytes = &mut self.bytes;
        self.files.retain(|k, kept| {
            let stay = *k != key && now.saturating_duration_since(kept.at) < PARTIAL_KEPT_FOR;
            if !stay {
                *bytes -= kept.bytes;
            }
            stay
        });
        let n = p.bytes();
        let owners: usize = self
            .files
            .values()
            .filter(|k| k.owner == owner)
            .map(|k| k.bytes)
            .sum();
        if self.bytes + n <= MAX_PARTIAL_BYTES && owners + n <= MAX_PARTIAL_BYTES_PER_OWNER {
            self.bytes += n;
            self.files.insert(
                key,
                Kept {
                    work: p,
                    owner: owner.to_string(),
                    bytes: n,
                    at: now,
                },
            );
        }
    }

    /// Bytes held (for the resource table's test).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.bytes
    }
}
