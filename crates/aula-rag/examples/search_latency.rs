//! How long one store's index takes to search, by size and mode: the part
//! of a `/search` that grows with the store (no HTTP, no query embedding).
//!
//!     cargo run --release -p aula-rag --example search_latency -- 5000 100000
//!
//! Chunks are synthetic: 384-dimensional random vectors (MiniLM's size) and
//! about 150 words drawn from a Zipf-like vocabulary of 30,000 words; 300
//! queries of 8 such words with a random vector. Prints build time and
//! p50/p95 per mode for each size.

use aula_rag::{Chunk, Index, Mode, Query};
use std::sync::Arc;
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// A word index, small ones far more often (about Zipf's law).
    fn word(&mut self, vocab: usize) -> usize {
        let u = self.unit().max(1e-9);
        ((vocab as f32).powf(u) as usize)
            .saturating_sub(1)
            .min(vocab - 1)
    }
}

fn word(i: usize) -> String {
    format!("w{i}x")
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![5_000, 100_000]
    } else {
        sizes
    };
    let (dim, vocab) = (384, 30_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let attrs = Arc::new(serde_json::Map::new());
    for n in sizes {
        let t = Instant::now();
        let mut ix = Index::new(dim);
        for i in 0..n {
            let text: Vec<String> = (0..150).map(|_| word(rng.word(vocab))).collect();
            let v: Vec<f32> = (0..dim).map(|_| rng.unit() - 0.5).collect();
            let chunk = Chunk {
                file_id: format!("file-{}", i / 4).into(),
                filename: "f.txt".into(),
                attributes: attrs.clone(),
                text: text.join(" "),
            };
            if ix.add(chunk, v).is_err() {
                return;
            }
        }
        let build = t.elapsed().as_secs_f64();
        let queries: Vec<(String, Vec<f32>)> = (0..300)
            .map(|_| {
                let q: Vec<String> = (0..8).map(|_| word(rng.word(vocab))).collect();
                (q.join(" "), (0..dim).map(|_| rng.unit() - 0.5).collect())
            })
            .collect();
        for mode in [Mode::Hybrid, Mode::Dense, Mode::Lexical] {
            let mut ms = Vec::with_capacity(queries.len());
            for (text, v) in &queries {
                let texts = [text.clone()];
                let vectors = [v.clone()];
                let t = Instant::now();
                let hits = ix.search(&Query {
                    texts: &texts,
                    vectors: &vectors,
                    mode,
                    filter: None,
                    k: 10,
                    threshold: None,
                });
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                std::hint::black_box(hits);
            }
            ms.sort_by(|a, b| a.total_cmp(b));
            println!(
                "{n:>7} chunks  build {build:6.1} s  {mode:<8}  p50 {:7.2} ms  p95 {:7.2} ms",
                ms[ms.len() / 2],
                ms[ms.len() * 95 / 100 - 1],
                mode = format!("{mode:?}").to_lowercase(),
            );
        }
    }
}
