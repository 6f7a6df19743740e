//! The search index of one vector store: its chunks, their vectors and
//! their BM25 postings, in memory, updated as files complete or leave.
//!
//! The rules:
//! * **Dense** scores are cosine similarities (vectors are normalised when
//!   added), by exact scan; with several query strings a chunk keeps its
//!   best score.
//! * **Lexical** scores are BM25 ([`crate::lexical`]) of all query strings
//!   joined.
//! * **Hybrid** (the default) fuses the two rankings by reciprocal rank,
//!   `Σ 1 / (RRF_K + rank)`, over the best [`CANDIDATES`] of each, scaled
//!   so that a chunk first in both scores 1.
//! * Filters apply before ranking: a chunk of a file that fails them is
//!   never a candidate.
//! * Results are ordered by score, ties by insertion order; at most `k`;
//!   none below `threshold`.

use crate::filter::Filter;
use crate::lexical::Bm25;
use serde_json::{Map, Value};
use std::sync::Arc;

pub const RRF_K: f32 = 60.0;
/// How deep each ranking goes into the fusion.
pub const CANDIDATES: usize = 100;

/// A searchable chunk and where it came from.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub file_id: Arc<str>,
    pub filename: Arc<str>,
    pub attributes: Arc<Map<String, Value>>,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Dense,
    Lexical,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "hybrid" => Some(Mode::Hybrid),
            "dense" => Some(Mode::Dense),
            "lexical" => Some(Mode::Lexical),
            _ => None,
        }
    }
}

pub struct Query<'a> {
    pub texts: &'a [String],
    /// One vector per text (may be empty for [`Mode::Lexical`]).
    pub vectors: &'a [Vec<f32>],
    pub mode: Mode,
    pub filter: Option<&'a Filter>,
    pub k: usize,
    pub threshold: Option<f32>,
}

#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub chunk: &'a Chunk,
    pub score: f32,
}

#[derive(Default)]
pub struct Index {
    dim: usize,
    chunks: Vec<Option<Chunk>>,
    vectors: Vec<f32>,
    bm25: Bm25,
    live: usize,
}

impl Index {
    pub fn new(dim: usize) -> Index {
        Index {
            dim,
            ..Default::default()
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Live chunks.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn add(&mut self, chunk: Chunk, mut vector: Vec<f32>) -> Result<(), String> {
        if vector.len() != self.dim {
            return Err(format!(
                "a vector of {} dimensions in an index of {}",
                vector.len(),
                self.dim
            ));
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
        let slot = self.chunks.len() as u32;
        self.bm25.add(slot, &chunk.text);
        self.chunks.push(Some(chunk));
        self.vectors.extend_from_slice(&vector);
        self.live += 1;
        Ok(())
    }

    /// Remove every chunk of a file; compacts when most slots are dead.
    pub fn remove_file(&mut self, file_id: &str) {
        for slot in 0..self.chunks.len() {
            if self.chunks[slot]
                .as_ref()
                .is_some_and(|c| &*c.file_id == file_id)
                && let Some(c) = self.chunks[slot].take()
            {
                self.bm25.remove(slot as u32, &c.text);
                self.live -= 1;
            }
        }
        if self.chunks.len() > 64 && self.live * 2 < self.chunks.len() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let old = std::mem::take(&mut self.chunks);
        let vectors = std::mem::take(&mut self.vectors);
        *self = Index::new(self.dim);
        for (slot, c) in old.into_iter().enumerate() {
            if let Some(c) = c {
                let v = vectors[slot * self.dim..(slot + 1) * self.dim].to_vec();
                // Same dimension by construction.
                let _ = self.add(c, v);
            }
        }
    }

    pub fn search<'a>(&'a self, q: &Query) -> Vec<Hit<'a>> {
        let keep = |slot: usize| match &self.chunks[slot] {
            Some(c) => q.filter.is_none_or(|f| f.matches(&c.attributes)),
            None => false,
        };
        let queries: Vec<Vec<f32>> = q.vectors.iter().map(|v| unit(v)).collect();
        let dense = || -> Vec<(usize, f32)> {
            let mut out = Vec::new();
            for slot in 0..self.chunks.len() {
                if !keep(slot) {
                    continue;
                }
                let v = &self.vectors[slot * self.dim..(slot + 1) * self.dim];
                let best = queries
                    .iter()
                    .map(|qv| dot(qv, v))
                    .fold(f32::NEG_INFINITY, f32::max);
                if best.is_finite() {
                    out.push((slot, best));
                }
            }
            out
        };
        let lexical = || -> Vec<(usize, f32)> {
            let text = q.texts.join(" ");
            self.bm25
                .scores(&text, |slot| keep(slot as usize))
                .into_iter()
                .map(|(s, v)| (s as usize, v))
                .collect()
        };
        let mut ranked = match q.mode {
            Mode::Dense => dense(),
            Mode::Lexical => lexical(),
            Mode::Hybrid => fuse(dense(), lexical()),
        };
        finish(&mut ranked, q.threshold, q.k);
        ranked
            .into_iter()
            .filter_map(|(slot, score)| {
                self.chunks[slot].as_ref().map(|chunk| Hit { chunk, score })
            })
            .collect()
    }
}

/// Reciprocal-rank fusion of a dense and a lexical ranking (each cut to
/// its best [`CANDIDATES`] first), scaled so that a chunk first in both
/// scores 1. Keys are whatever names a chunk: a slot here, a row in the
/// database; a key's order breaks ties.
pub fn fuse<K: Ord + Clone + std::hash::Hash>(
    mut dense: Vec<(K, f32)>,
    mut lexical: Vec<(K, f32)>,
) -> Vec<(K, f32)> {
    top(&mut dense, CANDIDATES);
    top(&mut lexical, CANDIDATES);
    let mut fused: std::collections::HashMap<K, f32> = Default::default();
    for list in [&dense, &lexical] {
        for (rank, (key, _)) in list.iter().enumerate() {
            *fused.entry(key.clone()).or_default() +=
                (RRF_K + 1.0) / (2.0 * (RRF_K + 1.0 + rank as f32));
        }
    }
    fused.into_iter().collect()
}

/// The end of every search: none below `threshold`, the best `k`, best
/// first (ties by key).
pub fn finish<K: Ord>(ranked: &mut Vec<(K, f32)>, threshold: Option<f32>, k: usize) {
    ranked.retain(|(_, s)| threshold.is_none_or(|t| *s >= t));
    top(ranked, k);
}

/// Keep the best `n`, best first; ties keep key order (insertion order for
/// slots). Selection first, so a large store is not sorted whole for ten
/// results.
pub fn top<K: Ord>(v: &mut Vec<(K, f32)>, n: usize) {
    let order = |a: &(K, f32), b: &(K, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if v.len() > n && n > 0 {
        v.select_nth_unstable_by(n - 1, order);
    }
    v.truncate(n);
    v.sort_by(order);
}

/// `v` scaled to length 1 (a zero vector stays zero).
fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

/// The dot product in eight independent lanes, which the compiler turns
/// into SIMD (a single running sum cannot be reordered, so it would not).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn chunk(file: &str, text: &str, attrs: Value) -> Chunk {
        Chunk {
            file_id: file.into(),
            filename: format!("{file}.txt").into(),
            attributes: Arc::new(attrs.as_object().unwrap().clone()),
            text: text.into(),
        }
    }

    fn index() -> Index {
        let mut ix = Index::new(3);
        ix.add(
            chunk("f1", "mitochondria make energy", json!({"week": 1})),
            vec![1.0, 0.0, 0.0],
        )
        .unwrap();
        ix.add(
            chunk("f2", "plants photosynthesis light", json!({"week": 2})),
            vec![0.0, 2.0, 0.0],
        )
        .unwrap();
        ix.add(
            chunk("f3", "energy from light in plants", json!({"week": 3})),
            vec![0.0, 0.7, 0.7],
        )
        .unwrap();
        ix
    }

    fn search(
        ix: &Index,
        text: &str,
        v: Vec<f32>,
        mode: Mode,
        filter: Option<&Filter>,
    ) -> Vec<String> {
        let texts = [text.to_string()];
        let vectors = [v];
        ix.search(&Query {
            texts: &texts,
            vectors: &vectors,
            mode,
            filter,
            k: 10,
            threshold: None,
        })
        .into_iter()
        .map(|h| h.chunk.file_id.to_string())
        .collect()
    }

    #[test]
    fn modes_rank_as_their_scores_say() {
        let ix = index();
        assert_eq!(
            search(&ix, "x", vec![0.0, 1.0, 0.1], Mode::Dense, None)[0],
            "f2"
        );
        assert_eq!(
            search(
                &ix,
                "mitochondria",
                vec![0.0, 1.0, 0.0],
                Mode::Lexical,
                None
            ),
            ["f1"]
        );
        // Lexically f1 (energy) and f3 (energy, light); densely f3 first.
        let h = search(&ix, "energy light", vec![0.0, 0.6, 0.8], Mode::Hybrid, None);
        assert_eq!(h[0], "f3");
    }

    #[test]
    fn filters_apply_before_ranking_and_files_can_leave() {
        let mut ix = index();
        let f = Filter::parse(&json!({"type": "gte", "key": "week", "value": 2})).unwrap();
        let h = search(&ix, "energy", vec![1.0, 0.0, 0.0], Mode::Hybrid, Some(&f));
        assert_eq!(h, ["f3", "f2"]);
        ix.remove_file("f3");
        assert_eq!(ix.len(), 2);
        assert!(
            !search(&ix, "energy", vec![1.0, 0.0, 0.0], Mode::Hybrid, None)
                .contains(&"f3".to_string())
        );
    }

    #[test]
    fn a_wrong_dimension_is_refused_and_thresholds_cut() {
        let mut ix = index();
        assert!(ix.add(chunk("f4", "x", json!({})), vec![1.0]).is_err());
        let texts = ["q".to_string()];
        let vectors = [vec![1.0, 0.0, 0.0]];
        let hits = ix.search(&Query {
            texts: &texts,
            vectors: &vectors,
            mode: Mode::Dense,
            filter: None,
            k: 10,
            threshold: Some(0.5),
        });
        assert_eq!(hits.len(), 1);
        assert!((hits[0].score - 1.0).abs() < 1e-6);
    }

    #[test]
    fn compaction_keeps_what_is_live() {
        let mut ix = Index::new(2);
        for i in 0..100 {
            ix.add(
                chunk(&format!("f{i}"), &format!("word{i} common"), json!({})),
                vec![1.0, i as f32],
            )
            .unwrap();
        }
        for i in 0..80 {
            ix.remove_file(&format!("f{i}"));
        }
        assert_eq!(ix.len(), 20);
        assert_eq!(
            search(&ix, "word90", vec![1.0, 0.0], Mode::Lexical, None),
            ["f90"]
        );
    }
}
