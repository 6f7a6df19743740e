//! What llama.cpp allocates for a model at given engine settings, derived
//! from the model's shape and llama.cpp's allocation rules (see
//! `llama-kv-cache-iswa.cpp`, `llama-context.cpp`):
//!
//! * weights: the GGUF's tensors, byte for byte;
//! * KV cache: one stream per slot (Aula sets `kv_unified = false`), each of
//!   `context` cells rounded up to 256; sliding-window layers keep only
//!   `window + n_ubatch` cells (rounded up to 256) when that is smaller;
//! * output buffer: one row of `vocab` f32 logits per slot;
//! * compute buffer (CPU): the logits of a full micro-batch,
//!   `vocab x n_ubatch x 4` bytes, plus activations
//!   `n_ubatch x (ffn + 2 x hidden) x 4` and the attention mask
//!   `n_kv x n_ubatch x 4`. The last two terms were fitted to llama.cpp's own
//!   logs for SmolLM2-135M and Gemma 3 270M (the same models the tests
//!   compare against), so the compute figure is calibrated, not derived; it
//!   is a small share of the total.

use crate::shape::ModelShape;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineSettings {
    /// Tokens per sequence (prompt + completion).
    pub context: u32,
    /// Slots (sequences decoded together).
    pub parallel: u32,
    /// Micro-batch size (llama.cpp `n_ubatch`, Aula's `--batch`).
    pub n_ubatch: u32,
    /// Bytes per KV element (2 for f16, about 1.06 for q8_0).
    pub kv_bytes_per_elem: f64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            context: 4096,
            parallel: 4,
            n_ubatch: 512,
            kv_bytes_per_elem: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LlamaCppMemory {
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub kv_cells_full: u64,
    pub kv_cells_swa: u64,
    pub compute_buffer_bytes: u64,
    pub output_buffer_bytes: u64,
    pub total_bytes: u64,
}

fn pad256(x: u64) -> u64 {
    x.div_ceil(256) * 256
}

/// Weights at the GGUF's own types, or at `bits_per_weight` when the shape
/// has no tensor table.
pub fn weight_bytes(shape: &ModelShape, bits_per_weight: f64) -> u64 {
    shape
        .weight_bytes
        .unwrap_or_else(|| (shape.params as f64 * bits_per_weight / 8.0).round() as u64)
}

/// The micro-batch llama.cpp runs: `n_ubatch`, which llama.cpp clamps to
/// the whole context.
pub(crate) fn micro_batch(s: &EngineSettings) -> u64 {
    let n_ctx_total = u64::from(s.context) * u64::from(s.parallel);
    u64::from(s.n_ubatch).min(n_ctx_total).max(1)
}

/// The compute buffer's first term: the f32 logits of one micro-batch.
pub(crate) fn logits_bytes(shape: &ModelShape, s: &EngineSettings) -> u64 {
    u64::from(shape.vocab) * micro_batch(s) * 4
}

/// KV bytes of `n_full` full-attention and `n_swa` sliding-window layers,
/// each holding `cells_full` (or `cells_swa`) cells in each slot.
pub(crate) fn kv_bytes(
    shape: &ModelShape,
    s: &EngineSettings,
    n_full: u64,
    n_swa: u64,
    cells_full: u64,
    cells_swa: u64,
) -> u64 {
    let per_layer_token = shape.kv_bytes_per_token_layer(s.kv_bytes_per_elem);
    let kv = f64::from(s.parallel)
        * per_layer_token
        * (n_full as f64 * cells_full as f64 + n_swa as f64 * cells_swa as f64);
    kv.round() as u64
}

pub fn memory(shape: &ModelShape, s: &EngineSettings) -> LlamaCppMemory {
    let ubatch = micro_batch(s);
    let cells_full = pad256(u64::from(s.context));
    let cells_swa = match shape.sliding_window {
        Some(w) if shape.n_swa_layers > 0 => pad256((u64::from(w) + ubatch).min(cells_full)),
        _ => 0,
    };
    let kv = kv_bytes(
        shape,
        s,
        u64::from(shape.n_full_layers()),
        u64::from(shape.n_swa_layers),
        cells_full,
        cells_swa,
    );
    let vocab = u64::from(shape.vocab);
    let output = vocab * 4 * u64::from(s.parallel);
    let n_kv = cells_full.max(cells_swa);
    let compute = logits_bytes(shape, s)
        + ubatch * (u64::from(shape.ffn) + 2 * u64::from(shape.hidden)) * 4
        + n_kv * ubatch * 4;
    let weights = weight_bytes(shape, 16.0);
    LlamaCppMemory {
        weights_bytes: weights,
        kv_cache_bytes: kv,
        kv_cells_full: cells_full,
        kv_cells_swa: cells_swa,
        compute_buffer_bytes: compute,
        output_buffer_bytes: output,
        total_bytes: weights + kv + compute + output,
    }
}
