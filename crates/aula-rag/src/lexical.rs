//! BM25 over chunks, kept up to date as files are added and removed (never
//! rebuilt per query).
//!
//! The rules:
//! * Text is analysed the same way for chunks and queries: lower-cased, cut
//!   at every character that is not a letter or digit, English stop words
//!   dropped, Snowball (Porter 2) English stems.
//! * Scoring is Okapi BM25 with Lucene's idf, `ln(1 + (N - df + 0.5) / (df + 0.5))`,
//!   and [`K1`], [`B`]; N, df and the average length count live chunks only.
//! * A removed chunk stops counting at once; its postings are skipped until
//!   the index is compacted (see `Index`).

use rust_stemmers::{Algorithm, Stemmer};
use std::collections::HashMap;

pub const K1: f32 = 0.9;
pub const B: f32 = 0.4;

/// Lucene's English stop words.
const STOP: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The terms of a text, in order.
pub fn analyze(text: &str) -> Vec<String> {
    thread_local! {
        static STEM: Stemmer = Stemmer::create(Algorithm::English);
    }
    STEM.with(|stem| {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .filter(|w| !STOP.contains(&w.as_str()))
            .map(|w| stem.stem(&w).into_owned())
            .collect()
    })
}

#[derive(Debug, Default)]
pub struct Bm25 {
    /// term -> (chunk slot, term frequency)
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// live chunks holding the term
    df: HashMap<String, u32>,
    /// length in terms per slot; None once removed
    lens: Vec<Option<u32>>,
    live: u32,
    total_len: u64,
}

impl Bm25 {
    /// Index the chunk at `slot` (slots are given in increasing order).
    pub fn add(&mut self, slot: u32, text: &str) {
        let terms = analyze(text);
        let mut tf: HashMap<String, u32> = HashMap::new();
        for t in &terms {
            *tf.entry(t.clone()).or_default() += 1;
        }
        for (t, n) in tf {
            *self.df.entry(t.clone()).or_default() += 1;
            self.postings.entry(t).or_default().push((slot, n));
        }
        if self.lens.len() <= slot as usize {
            self.lens.resize(slot as usize + 1, None);
        }
        self.lens[slot as usize] = Some(terms.len() as u32);
        self.live += 1;
        self.total_len += terms.len() as u64;
    }

    /// Stop counting the chunk at `slot` (its text as it was added).
    pub fn remove(&mut self, slot: u32, text: &str) {
        let Some(Some(len)) = self.lens.get(slot as usize).copied() else {
            return;
        };
        let mut seen = std::collections::HashSet::new();
        for t in analyze(text) {
            if seen.insert(t.clone())
                && let Some(d) = self.df.get_mut(&t)
            {
                *d = d.saturating_sub(1);
            }
        }
        self.lens[slot as usize] = None;
        self.live -= 1;
        self.total_len -= u64::from(len);
    }

    /// BM25 scores of the live chunks that hold any term of `query` and
    /// that `keep` accepts, by slot.
    pub fn scores(&self, query: &str, keep: impl Fn(u32) -> bool) -> HashMap<u32, f32> {
        let mut out: HashMap<u32, f32> = HashMap::new();
        if self.live == 0 {
            return out;
        }
        let n = self.live as f32;
        let avg = self.total_len as f32 / n;
        let mut terms = analyze(query);
        terms.sort();
        terms.dedup();
        for t in terms {
            let (Some(list), Some(&df)) = (self.postings.get(&t), self.df.get(&t)) else {
                continue;
            };
            if df == 0 {
                continue;
            }
            let idf = (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
            for &(slot, tf) in list {
                let Some(Some(len)) = self.lens.get(slot as usize) else {
                    continue;
                };
                if !keep(slot) {
                    continue;
                }
                let tf = tf as f32;
                let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * *len as f32 / avg));
                *out.entry(slot).or_default() += s;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_stems_and_drops_stop_words() {
        assert_eq!(
            analyze("The Running of the mitochondria's cells!"),
            ["run", "mitochondria", "s", "cell"]
        );
    }

    #[test]
    fn rarer_terms_and_shorter_chunks_score_higher_and_removal_counts() {
        let mut b = Bm25::default();
        b.add(0, "photosynthesis in plant cells");
        b.add(1, "cells divide by mitosis; cells grow");
        b.add(
            2,
            "plant cells and animal cells and more text about cells in general",
        );
        let s = b.scores("photosynthesis cells", |_| true);
        assert!(s[&0] > s[&1] && s[&0] > s[&2], "{s:?}");
        let s = b.scores("mitosis", |_| true);
        assert_eq!(s.len(), 1);
        b.remove(1, "cells divide by mitosis; cells grow");
        assert!(b.scores("mitosis", |_| true).is_empty());
        assert!(b.scores("cells", |slot| slot != 0).contains_key(&2));
        assert!(!b.scores("cells", |slot| slot != 0).contains_key(&0));
    }
}
