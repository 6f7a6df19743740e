//! Vector-store search inside PostgreSQL against the in-memory index, on
//! the same chunks and queries, by size and mode: the part of a `/search`
//! that grows with the store (no HTTP, no query embedding).
//!
//!     cargo run --release -p aula-gateway --example search_in_postgres -- \
//!         postgres://aula@127.0.0.1:5432/postgres 5000 100000
//!
//! The chunks are `aula-rag`'s `search_latency` example's (384-dimensional
//! random vectors, about 150 Zipf-distributed words, 300 queries of 8
//! words), written through the store as ingestion writes them (files of 50
//! chunks). Prints, per size: the time to write them, the time to load the
//! in-memory index from the database (what a gateway does on a store's
//! first search), and per mode p50/p95 of both searches and how many of the
//! in-memory top 10 the database's top 10 holds (BM25 is the same formula,
//! so lexical should be 10 of 10; HNSW is approximate).

use aula_gateway::rag::search::{Request, StatsCache, in_database};
use aula_rag::{Chunk, Index, Mode, Query};
use aula_store::{FileStatus, NewChunk, Role, Store, StoreFileRecord, VectorStoreRecord};
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

/// p50 and p95, as `aula-rag`'s example computes them.
fn p50_p95(ms: &mut [f64]) -> (f64, f64) {
    ms.sort_by(|a, b| a.total_cmp(b));
    (ms[ms.len() / 2], ms[ms.len() * 95 / 100 - 1])
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: search_in_postgres DATABASE_URL [SIZES...]")?;
    let sizes: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![5_000, 100_000]
    } else {
        sizes
    };
    let store = Store::open(&url).await?;
    let (lex, dense) = store.searches_in_database();
    println!("database searches: lexical {lex}, dense (pgvector) {dense}");
    let stats = StatsCache::default();
    let (dim, vocab, per_file) = (384, 30_000, 50);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for n in sizes {
        let id = format!("vs_bench_{n}");
        store.delete_vector_store(&id).await?;
        store
            .create_vector_store(&VectorStoreRecord {
                id: id.clone(),
                owner: "bench".into(),
                owner_role: Role::Student,
                owner_groups: vec![],
                name: id.clone(),
                description: None,
                metadata: "{}".into(),
                chunking: "{}".into(),
                generation: 0,
                created_ms: 0,
                last_active_ms: 0,
                shares: vec![],
            })
            .await?;
        let t = Instant::now();
        for f in 0..n.div_ceil(per_file) {
            let file_id = format!("file-{n}-{f:06}");
            store
                .add_store_file(
                    &StoreFileRecord {
                        store_id: id.clone(),
                        file_id: file_id.clone(),
                        status: FileStatus::InProgress,
                        error_code: None,
                        error_message: None,
                        attributes: "{}".into(),
                        chunking: "{}".into(),
                        usage_bytes: 0,
                        created_ms: f as i64,
                    },
                    None,
                )
                .await?;
            let chunks: Vec<NewChunk> = (0..per_file.min(n - f * per_file))
                .map(|_| {
                    let text: Vec<String> = (0..150).map(|_| word(rng.word(vocab))).collect();
                    let text = text.join(" ");
                    NewChunk {
                        terms: aula_rag::lexical::analyze(&text),
                        text,
                        tokens: 150,
                        embedding: (0..dim).map(|_| rng.unit() - 0.5).collect(),
                    }
                })
                .collect();
            store.complete_store_file(&id, &file_id, &chunks, 0).await?;
        }
        let write = t.elapsed().as_secs_f64();
        // The in-memory index, loaded as a gateway loads it.
        let t = Instant::now();
        let mut ix = Index::new(dim);
        let attrs = Arc::new(serde_json::Map::new());
        for r in store.store_chunks(&id).await? {
            let chunk = Chunk {
                file_id: r.file_id.as_str().into(),
                filename: r.filename.as_str().into(),
                attributes: attrs.clone(),
                text: r.text,
            };
            ix.add(chunk, r.embedding)?;
        }
        let load = t.elapsed().as_secs_f64();
        println!("{n:>7} chunks  written in {write:.1} s  loaded into memory in {load:.1} s");
        let queries: Vec<(String, Vec<f32>)> = (0..300)
            .map(|_| {
                let q: Vec<String> = (0..8).map(|_| word(rng.word(vocab))).collect();
                (q.join(" "), (0..dim).map(|_| rng.unit() - 0.5).collect())
            })
            .collect();
        for mode in [Mode::Hybrid, Mode::Dense, Mode::Lexical] {
            if mode != Mode::Lexical && !dense {
                continue;
            }
            let (mut db_ms, mut mem_ms, mut same) = (Vec::new(), Vec::new(), 0usize);
            for (text, v) in &queries {
                let texts = [text.clone()];
                let vectors = [v.clone()];
                let req = Request {
                    queries: &texts,
                    mode,
                    filter: None,
                    k: 10,
                    threshold: None,
                };
                let t = Instant::now();
                let found = in_database(&store, &stats, &id, &req, &vectors).await?;
                db_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                let t = Instant::now();
                let hits = ix.search(&Query {
                    texts: &texts,
                    vectors: &vectors,
                    mode,
                    filter: None,
                    k: 10,
                    threshold: None,
                });
                mem_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                // Chunks are told apart by text (synthetic texts do not repeat).
                same += hits
                    .iter()
                    .filter(|h| found.iter().any(|f| f.text == h.chunk.text))
                    .count();
            }
            let ((d50, d95), (m50, m95)) = (p50_p95(&mut db_ms), p50_p95(&mut mem_ms));
            println!(
                "{n:>7} chunks  {mode:<8}  database p50 {d50:7.2} ms  p95 {d95:7.2} ms | memory p50 {m50:7.2} ms  p95 {m95:7.2} ms | top 10 shared {:.2}/10",
                same as f64 / queries.len() as f64,
                mode = format!("{mode:?}").to_lowercase(),
            );
        }
        store.delete_vector_store(&id).await?;
    }
    Ok(())
}
