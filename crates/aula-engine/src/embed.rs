//! Sentence embeddings on one llama.cpp context, batched across requests.
//!
//! One OS thread owns the context (created with embeddings on and the
//! model's own pooling). Each step it packs as many waiting inputs — from
//! any number of requests — as fit in one batch (at most `n_batch` tokens and
//! `n_seq` sequences; every input whole, as non-causal models need), runs
//! it, reads one pooled vector per sequence, L2-normalises it (as
//! sentence-transformers' `Normalize` and llama-server do) and hands each
//! request its vectors once all its inputs are done. A request whose client
//! has gone away is dropped before its next input is packed.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use tokio::sync::oneshot;

/// However small the configured queue, this many inputs may wait.
pub const MIN_QUEUED_INPUTS: usize = aula_protocol::MAX_EMBED_INPUTS;

/// What the model takes, read from its GGUF at load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbeddingInfo {
    /// Length of each vector.
    pub dimensions: usize,
    /// Most tokens of one input, special tokens included.
    pub max_tokens: usize,
    /// llama.cpp's pooling (`mean`, `cls`, `last`, …).
    pub pooling: String,
    /// Whether vectors are L2-normalised.
    pub normalize: bool,
}

/// One request: its inputs, already tokenized and within the model's limit.
pub struct EmbedJob {
    pub inputs: Vec<Vec<LlamaToken>>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// Counters for `/health`.
#[derive(Debug, Default)]
pub struct EmbedStats {
    /// Inputs waiting or being embedded.
    pub pending_inputs: AtomicUsize,
    /// Batches run since start, and inputs embedded in them.
    pub batches: AtomicUsize,
    pub inputs: AtomicUsize,
}

struct Pending {
    job: EmbedJob,
    vectors: Vec<Option<Vec<f32>>>,
    /// Inputs not yet packed into a batch.
    next: usize,
    done: usize,
    /// Answered with an error; its remaining sequences are ignored.
    failed: bool,
}

pub struct Embedder<'m> {
    pub ctx: LlamaContext<'m>,
    pub n_batch: usize,
    pub n_seq: usize,
    pub normalize: bool,
    pub stats: Arc<EmbedStats>,
}

fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

impl Embedder<'_> {
    /// Run until every sender of jobs is gone.
    pub fn run(mut self, jobs: Receiver<EmbedJob>) {
        let mut queue: VecDeque<Pending> = VecDeque::new();
        loop {
            // Wait for work when idle; otherwise take whatever has arrived.
            if queue.is_empty() {
                match jobs.recv() {
                    Ok(j) => queue.push_back(Pending::new(j)),
                    Err(_) => return,
                }
            }
            while let Ok(j) = jobs.try_recv() {
                queue.push_back(Pending::new(j));
            }
            // Clients that left: drop their work.
            queue.retain(|p| {
                let keep = !p.job.reply.is_closed();
                if !keep {
                    self.stats
                        .pending_inputs
                        .fetch_sub(p.job.inputs.len() - p.done, Ordering::Relaxed);
                }
                keep
            });
            if queue.is_empty() {
                continue;
            }
            self.step(&mut queue);
            // Hand out finished requests, in any order.
            let mut i = 0;
            while i < queue.len() {
                if queue[i].done == queue[i].job.inputs.len() {
                    if let Some(p) = queue.remove(i) {
                        let vectors = p
                            .vectors
                            .into_iter()
                            .map(Option::unwrap_or_default)
                            .collect();
                        let _ = p.job.reply.send(Ok(vectors));
                    }
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Pack one batch from the front of the queue and embed it.
    fn step(&mut self, queue: &mut VecDeque<Pending>) {
        let mut batch = LlamaBatch::new(self.n_batch, self.n_seq as i32);
        // (queue index, input index) of each sequence in the batch.
        let mut packed: Vec<(usize, usize)> = Vec::new();
        let mut tokens = 0usize;
        'fill: for (qi, p) in queue.iter_mut().enumerate() {
            while p.next < p.job.inputs.len() {
                let input = &p.job.inputs[p.next];
                if packed.len() == self.n_seq || tokens + input.len() > self.n_batch {
                    break 'fill;
                }
                if batch
                    .add_sequence(input, packed.len() as i32, true)
                    .is_err()
                {
                    break 'fill;
                }
                tokens += input.len();
                packed.push((qi, p.next));
                p.next += 1;
            }
        }
        if packed.is_empty() {
            // Cannot happen (inputs are checked against n_batch), but never spin.
            if let Some(p) = queue.pop_front() {
                self.stats
                    .pending_inputs
                    .fetch_sub(p.job.inputs.len() - p.done, Ordering::Relaxed);
                let _ = p
                    .job
                    .reply
                    .send(Err("an input does not fit in one batch".into()));
            }
            return;
        }
        self.ctx.clear_kv_cache();
        let result = self.ctx.decode(&mut batch).map_err(|e| e.to_string());
        for (seq, (qi, ii)) in packed.iter().enumerate() {
            let p = &mut queue[*qi];
            if p.failed {
                continue;
            }
            let v = match &result {
                Ok(()) => match self.ctx.embeddings_seq_ith(seq as i32) {
                    Ok(v) => {
                        let mut v = v.to_vec();
                        if self.normalize {
                            l2_normalize(&mut v);
                        }
                        Ok(v)
                    }
                    Err(e) => Err(format!("no embedding for sequence {seq}: {e}")),
                },
                Err(e) => Err(format!("llama.cpp could not embed the batch: {e}")),
            };
            match v {
                Ok(v) => p.vectors[*ii] = Some(v),
                Err(e) => {
                    // Fail the whole request; its other inputs are skipped
                    // (and no longer counted as waiting).
                    let (tx, _) = oneshot::channel();
                    let reply = std::mem::replace(&mut p.job.reply, tx);
                    let _ = reply.send(Err(e));
                    self.stats
                        .pending_inputs
                        .fetch_sub(p.job.inputs.len() - p.done, Ordering::Relaxed);
                    p.failed = true;
                    p.next = p.job.inputs.len();
                    p.done = p.job.inputs.len();
                    continue;
                }
            }
            p.done += 1;
            self.stats.pending_inputs.fetch_sub(1, Ordering::Relaxed);
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.inputs.fetch_add(packed.len(), Ordering::Relaxed);
    }
}

impl Pending {
    fn new(job: EmbedJob) -> Self {
        let n = job.inputs.len();
        Pending {
            job,
            vectors: vec![None; n],
            next: 0,
            done: 0,
            failed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_gives_unit_length() {
        let mut v = vec![3.0f32, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
