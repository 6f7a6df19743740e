//! Fine-tuning memory and time: full fine-tuning with mixed-precision AdamW,
//! LoRA (rank r) and QLoRA (NF4 base), with and without gradient
//! checkpointing, per 10,000 samples of S tokens.
//!
//! * Full: 16-bit weights (2 B/param) + fp32 master weights (4) + 16-bit
//!   gradients (2) + AdamW moments in fp32 (8) = 16 bytes per parameter.
//! * LoRA: frozen 16-bit base (2 B/param); adapters of rank r on every
//!   attention and MLP matrix, r x (in + out) parameters each, trained at
//!   16 bytes per parameter like full fine-tuning.
//! * QLoRA: the same with the base in NF4 (4.127 bits per parameter with
//!   double quantization).
//! * Activations (Korthikanti et al., "Reducing Activation Recomputation in
//!   Large Transformer Models", 2022), 16-bit, flash attention (no s x s
//!   scores kept): 34 x s x b x h bytes per layer; with checkpointing only
//!   each layer's input (2 x s x b x h) plus one layer's full set.
//! * Time: 6 x active params FLOPs per token for full fine-tuning, 4 x for
//!   LoRA/QLoRA (no weight gradients for the base), + 2 x with checkpointing
//!   (the recomputed forward), at the profile's achievable 16-bit FLOPS.

use crate::hardware::Hardware;
use crate::shape::ModelShape;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Full,
    Lora,
    Qlora,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FineTune {
    pub method: Method,
    pub gradient_checkpointing: bool,
    pub trainable_params: u64,
    pub weights_bytes: u64,
    pub gradients_bytes: u64,
    pub optimizer_bytes: u64,
    pub activations_bytes: u64,
    pub total_bytes: u64,
    pub fits: bool,
    /// Hours for 10,000 samples of `seq_len` tokens (None without a FLOPS figure).
    pub hours_per_10k_samples: Option<f64>,
}

/// Adapter parameters of rank `r` on q, k, v, o and the MLP matrices.
pub fn lora_params(shape: &ModelShape, r: u64) -> u64 {
    let h = u64::from(shape.hidden);
    let q = u64::from(shape.n_heads) * u64::from(shape.head_dim_k);
    let kv = u64::from(shape.n_kv_heads) * u64::from(shape.head_dim_k);
    let ffn = u64::from(shape.ffn);
    let experts = u64::from(shape.n_experts.max(1));
    let attn = r * (h + q) + 2 * r * (h + kv) + r * (q + h);
    let mlp = experts * 3 * r * (h + ffn);
    u64::from(shape.n_layers) * (attn + mlp)
}

pub fn estimate(
    shape: &ModelShape,
    hw: &Hardware,
    method: Method,
    checkpointing: bool,
    seq_len: u32,
    micro_batch: u32,
    rank: u32,
) -> FineTune {
    let p = shape.params;
    let sbh = u64::from(seq_len) * u64::from(micro_batch) * u64::from(shape.hidden);
    let layers = u64::from(shape.n_layers);
    let activations = if checkpointing {
        layers * 2 * sbh + 34 * sbh
    } else {
        layers * 34 * sbh
    } + u64::from(seq_len) * u64::from(micro_batch) * u64::from(shape.vocab) * 4;
    let (trainable, weights, grads, optim) = match method {
        Method::Full => (p, 2 * p + 4 * p, 2 * p, 8 * p),
        Method::Lora | Method::Qlora => {
            let t = lora_params(shape, u64::from(rank));
            let base = if method == Method::Lora {
                2 * p
            } else {
                (p as f64 * 4.127 / 8.0) as u64
            };
            (t, base + 6 * t, 2 * t, 8 * t)
        }
    };
    let total = weights + grads + optim + activations;
    let per_token = match method {
        Method::Full => 6.0,
        _ => 4.0,
    } + if checkpointing { 2.0 } else { 0.0 };
    let flops = hw.achievable_flops(false);
    let hours = (flops > 0.0).then(|| {
        10_000.0 * f64::from(seq_len) * per_token * shape.params_active as f64 / flops / 3600.0
    });
    FineTune {
        method,
        gradient_checkpointing: checkpointing,
        trainable_params: trainable,
        weights_bytes: weights,
        gradients_bytes: grads,
        optimizer_bytes: optim,
        activations_bytes: activations,
        total_bytes: total,
        fits: total <= hw.usable_bytes(),
        hours_per_10k_samples: hours,
    }
}

/// Adapter parameters of rank `r` on q, k, v and o only: what Aula's own
/// trainer trains (`trainer/aula_train.py`'s TARGETS).
pub fn attention_adapter_params(shape: &ModelShape, rank: u32) -> u64 {
    let h = u64::from(shape.hidden);
    let q = u64::from(shape.n_heads) * u64::from(shape.head_dim_k);
    let kv = u64::from(shape.n_kv_heads) * u64::from(shape.head_dim_k);
    let r = u64::from(rank);
    u64::from(shape.n_layers) * (r * (h + q) + 2 * r * (h + kv) + r * (q + h))
}

/// PyTorch's own resident memory before any model (CPU wheel, measured:
/// BENCHMARKS.md, "Fine-tuning").
pub const TORCH_CPU_RUNTIME_BYTES: u64 = 1_000_000_000;

/// Peak memory of Aula's own trainer (`trainer/aula_train.py`) on the CPU:
/// LoRA on f32 weights dequantised from the GGUF.
///
/// * weights: 4 B/param, twice at the peak (transformers' dequantised load
///   and the rebuilt model, before the first is dropped);
/// * PyTorch's runtime: [`TORCH_CPU_RUNTIME_BYTES`];
/// * adapters: r x (in + out) on q, k, v, o at 16 B/param (f32 weight,
///   gradient, AdamW's two moments);
/// * activations in f32, no checkpointing: 2 x 34 x s x b x h per layer
///   (the 16-bit count doubled), plus the logits and their gradient:
///   3 x s x b x vocab x 4 B.
///
/// Checked on one measured run only (SmolLM2-135M, batch 8: 2.80 GB peak;
/// for that job as the gateway sizes it — the longest example bounded at 68
/// tokens — this gives 3.05 GB, 9% above), so it is not a fit to many shapes.
pub fn cpu_trainer_bytes(shape: &ModelShape, rank: u32, micro_batch: u32, seq_len: u32) -> u64 {
    let p = shape.params;
    let h = u64::from(shape.hidden);
    let adapters = attention_adapter_params(shape, rank);
    let sb = u64::from(seq_len) * u64::from(micro_batch);
    let activations = u64::from(shape.n_layers) * 68 * sb * h + 3 * sb * u64::from(shape.vocab) * 4;
    8 * p + TORCH_CPU_RUNTIME_BYTES + 16 * adapters + activations
}

/// The CUDA runtime, cuBLAS's workspace and PyTorch's caching allocator's
/// slack before any tensor (an assumption: 1 GB; a job's measured peak is
/// recorded in its events and corrects the fleet's hold).
pub const TORCH_CUDA_RUNTIME_BYTES: u64 = 1_000_000_000;

/// Peak memory of Aula's own trainer on a CUDA GPU: LoRA on 16-bit (bf16)
/// weights, or QLoRA on NF4 weights (4.127 bits per parameter) with bf16
/// compute, gradient checkpointing on.
///
/// * loading: the GGUF dequantised to bf16, 2 B/param (the model is
///   rebuilt around the same tensors; in the box's memory, which on a
///   unified-memory box such as the GB10 is the GPU's pool). For QLoRA too:
///   the bf16 weights are written once to a Hugging Face directory and read
///   back shard by shard into NF4, so a 70B base (141 GB in bf16) does not
///   load on a 128 GB GB10 from a GGUF. From a Hugging Face directory (a
///   vLLM base, `from_gguf` false) QLoRA quantises shard by shard while
///   loading: no bf16 copy;
/// * training: the base's weights, adapters on q, k, v, o at 16 B/param
///   (f32 weight, gradient, AdamW's two moments), activations with
///   checkpointing (each layer's input, 2 x s x b x h bytes, plus one
///   layer's 34 x s x b x h), the logits and their gradient in f32
///   (3 x s x b x vocab x 4 B), and [`TORCH_CUDA_RUNTIME_BYTES`].
///
/// The larger of the two. Not yet checked against a measured GPU run
/// (no GPU was lent to the sessions that wrote it): `scripts/gpu-check.sh`
/// prints both.
pub fn gpu_trainer_bytes(
    shape: &ModelShape,
    from_gguf: bool,
    qlora: bool,
    rank: u32,
    micro_batch: u32,
    seq_len: u32,
) -> u64 {
    let p = shape.params;
    let h = u64::from(shape.hidden);
    let adapters = attention_adapter_params(shape, rank);
    let sb = u64::from(seq_len) * u64::from(micro_batch);
    let activations =
        u64::from(shape.n_layers) * 2 * sb * h + 34 * sb * h + 3 * sb * u64::from(shape.vocab) * 4;
    let base = if qlora {
        (p as f64 * 4.127 / 8.0) as u64
    } else {
        2 * p
    };
    let loading = if qlora && !from_gguf { 0 } else { 2 * p };
    let training = base + 16 * adapters + activations + TORCH_CUDA_RUNTIME_BYTES;
    loading.max(training)
}

/// All six: three methods, with and without checkpointing.
pub fn all(shape: &ModelShape, hw: &Hardware, seq_len: u32, rank: u32) -> Vec<FineTune> {
    let mut out = Vec::new();
    for m in [Method::Full, Method::Lora, Method::Qlora] {
        for c in [false, true] {
            out.push(estimate(shape, hw, m, c, seq_len, 1, rank));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog, hardware};

    /// The GPU trainer: QLoRA holds the base in about a quarter of LoRA's
    /// bf16; batches grow only the activations; loading bounds a small
    /// QLoRA job.
    #[test]
    fn gpu_trainer_memory_follows_its_rules() {
        let m = catalog::find("llama-3.1-8b").unwrap();
        let lora = gpu_trainer_bytes(&m, true, false, 16, 4, 2048);
        let qlora = gpu_trainer_bytes(&m, true, true, 16, 4, 2048);
        // bf16 8B: 16 GB of weights; NF4: about 4.1 GB; the rest is the same.
        let nf4 = (m.params as f64 * 4.127 / 8.0) as u64;
        assert!(lora > 2 * m.params, "{lora}");
        assert_eq!(lora - qlora, 2 * m.params - nf4);
        let bigger = gpu_trainer_bytes(&m, true, false, 16, 8, 2048);
        let sbh = 4 * 2048 * u64::from(m.hidden);
        let logits = 3 * 4 * 2048 * u64::from(m.vocab) * 4;
        assert_eq!(
            bigger - lora,
            u64::from(m.n_layers) * 2 * sbh + 34 * sbh + logits
        );
        // A tiny job: the load (two bf16 copies) is the peak.
        assert_eq!(gpu_trainer_bytes(&m, true, true, 1, 1, 16), 2 * m.params);
        assert!(gpu_trainer_bytes(&m, true, false, 1, 1, 16) > 2 * m.params);
        // From Hugging Face weights QLoRA never holds the bf16 copy.
        let hf = gpu_trainer_bytes(&m, false, true, 1, 1, 16);
        assert!(hf < m.params, "{hf}");
    }

    #[test]
    fn sixteen_bytes_per_parameter_for_full_fine_tuning() {
        let m = catalog::find("llama-2-7b").unwrap();
        let hw = hardware::find("gb10").unwrap();
        let f = estimate(&m, &hw, Method::Full, true, 2048, 1, 16);
        assert_eq!(
            f.weights_bytes + f.gradients_bytes + f.optimizer_bytes,
            16 * m.params
        );
        // 108 GB of state: a 7B full fine-tune just fits a GB10's 119.6 GB,
        // not a 24 GB card; QLoRA fits either, easily.
        assert!(f.fits && f.total_bytes > 100_000_000_000, "{f:?}");
        let rtx = hardware::find("rtx-4090").unwrap();
        assert!(!estimate(&m, &rtx, Method::Full, true, 2048, 1, 16).fits);
        let q = estimate(&m, &hw, Method::Qlora, true, 2048, 1, 16);
        assert!(q.fits && q.total_bytes < 8_000_000_000, "{q:?}");
        // LoRA rank 16 on all matrices of Llama-2-7B: about 40M parameters.
        assert!(
            (39_000_000..41_000_000).contains(&q.trainable_params),
            "{}",
            q.trainable_params
        );
    }

    #[test]
    fn the_cpu_trainer_is_dominated_by_f32_weights_and_the_runtime() {
        let m = catalog::find("llama-3.1-8b").unwrap();
        let b = cpu_trainer_bytes(&m, 8, 1, 512);
        // 8B parameters at 4 B, twice: 64 GB, far above a GPU's LoRA figure.
        assert!(b > 8 * m.params && b < 8 * m.params + 10_000_000_000, "{b}");
        let small = catalog::find("gemma-3-270m").unwrap();
        let s = cpu_trainer_bytes(&small, 8, 8, 64);
        assert!(s > TORCH_CPU_RUNTIME_BYTES + 8 * small.params, "{s}");
    }

    #[test]
    fn checkpointing_trades_memory_for_time() {
        let m = catalog::find("llama-3.1-8b").unwrap();
        let hw = hardware::find("h100-sxm").unwrap();
        let plain = estimate(&m, &hw, Method::Lora, false, 4096, 1, 16);
        let ckpt = estimate(&m, &hw, Method::Lora, true, 4096, 1, 16);
        assert!(ckpt.activations_bytes * 4 < plain.activations_bytes);
        assert!(ckpt.hours_per_10k_samples.unwrap() > plain.hours_per_10k_samples.unwrap());
    }
}
