//! Estimates for one model x precision x engine x context x concurrency on
//! one hardware profile: memory, how many sequences fit, speed, and a
//! verdict. Every figure follows from the model's shape and the profile's
//! numbers by the formulas in [`FORMULAS`], which `aula plan` prints.

use crate::decode::{Constants, StepTime};
use crate::ftype::{FileType, Role, TypeBytes};
use crate::hardware::Hardware;
use crate::llamacpp::{self, EngineSettings};
use crate::shape::ModelShape;
use serde::Serialize;

/// The formulas, spelled out once (printed by `aula plan --explain`).
pub const FORMULAS: &[(&str, &str)] = &[
    (
        "weights",
        "GGUF: the tensor table, byte for byte; a llama.cpp file type (q4_k_m, q8_0, ...): each tensor at the type llama-quantize gives it (output head Q6_K, more bits for some layers' attn_v and ffn_down in _M types) x its parameters; otherwise parameters x bits per weight / 8 (bits include the quantization scales: q8_0 8.5, q4_k 4.5, int4 (group 128) 4.25, nf4 4.13)",
    ),
    (
        "KV per token",
        "layers x KV heads x (K head dim + V head dim) x bytes per element; sliding-window layers hold at most window + batch tokens",
    ),
    (
        "KV per sequence",
        "KV per token x context (full-attention layers) + KV per token x min(context, window) (sliding-window layers)",
    ),
    (
        "embedded / llama-server overhead",
        "llama.cpp's compute buffer (logits of one micro-batch + activations + attention mask) and output buffer, plus 0.5 GB CUDA context on a GPU (assumed)",
    ),
    (
        "vLLM",
        "budget = gpu_memory_utilization x device memory as CUDA reports it; V1 (default): KV cache = budget - weights (and a draft's) - activation peak - 0.4 GB outside PyTorch (median of published logs), CUDA graphs (0.5 GB, assumed) beyond the budget; V0: KV cache = budget - weights - activation peak - 1 GB (CUDA context, graphs: assumed); blocks of 16 tokens of every attention layer, a speculative draft's included; maximum concurrency = KV tokens / max_model_len, as vLLM prints it at start-up",
    ),
    (
        "vLLM activation peak",
        "profiled with a batch of max_num_batched_tokens (V1: default 8192; V0 without chunked prefill: at least max_model_len): tokens x (4 x hidden + 2 x FFN) x 2 bytes + max_num_seqs x vocab x 4 bytes of logits (an estimate of what vLLM measures)",
    ),
    (
        "SGLang",
        "mem_fraction_static x device memory holds weights and the KV pool; activations outside it",
    ),
    (
        "decode step",
        "time = max(memory time, 2 x active parameters x batch / achievable FLOPS); llama.cpp memory time = layers x fixed cost per layer (per device class and llama.cpp generation) + each tensor type's bytes / (peak bandwidth x the class's memory share x that type's kernel efficiency on the backend) + KV bytes / (peak bandwidth x memory share), constants in catalog/decode.toml with their sources; vLLM/SGLang memory time = bytes read / the profile's achievable bandwidth; bytes read = weights touched + batch x KV of a sequence of context / 2 tokens (half full on average; sliding-window layers read at most their window); weights touched = all but a token-embedding table that is only looked up (one row per token), and of a mixture of experts' routed experts the share (1 - (1 - k/E)^batch)",
    ),
    (
        "speed range",
        "single-stream decode / (1 + the largest over-prediction) .. / (1 + the largest under-prediction) among the published check rows of the device class (catalog/speed-checks.toml; rows that set constants never count); none with fewer than 2 checks",
    ),
    ("single-stream decode", "1 / decode step at batch 1"),
    ("aggregate decode", "batch / decode step at that batch"),
    (
        "prefill",
        "achievable FLOPS / (2 x active parameters but a lookup-only embedding table) tokens/s; time to first token = prompt / prefill + one decode step",
    ),
];

pub use crate::engine::EngineKind;
mod request;
pub use request::*;
mod outcome;
pub use outcome::*;
mod memory;
use memory::*;
mod speed;
pub use speed::*;

const GB: f64 = 1e9;
const CUDA_CONTEXT: u64 = 500_000_000;
/// What vLLM V0 and SGLang hold outside weights, activations and the KV
/// pool (CUDA context, graphs, allocator slack): assumed.
pub const VLLM_FIXED: u64 = 1_000_000_000;
/// vLLM V1: memory outside PyTorch inside the budget (CUDA context,
/// cuBLAS and NCCL workspaces). Published start-up logs print 0.03-1.79 GiB
/// ("non_torch_memory"; vllm-project/vllm#10517 0.35 GiB on an RTX 3090,
/// #14447 0.20 GiB, #16570 0.34-0.43 GiB, #13882 0.03 GiB, #10511 1.79 GiB
/// on an H100): about their median.
pub const VLLM_V1_NON_TORCH: u64 = 400_000_000;
/// vLLM V1's CUDA graphs, captured after the KV cache is sized, so beyond
/// the budget (assumed: not measured here).
pub const VLLM_V1_CUDA_GRAPHS: u64 = 500_000_000;
const VLLM_BLOCK: u64 = 16;

/// KV bytes of one sequence of `context` tokens (sliding-window layers capped).
pub fn kv_per_sequence(shape: &ModelShape, context: u32, bytes_per_elem: f64) -> f64 {
    if shape.architecture == "bert" {
        return 0.0;
    }
    let per_layer = shape.kv_bytes_per_token_layer(bytes_per_elem);
    let swa_tokens = shape
        .sliding_window
        .map(|w| w.min(context))
        .unwrap_or(context);
    per_layer
        * (f64::from(shape.n_full_layers()) * f64::from(context)
            + f64::from(shape.n_swa_layers) * f64::from(swa_tokens))
}

/// Weight bytes of a model at a precision, split by how decoding reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub total: u64,
    /// All routed experts (a step reads the chosen ones' share).
    pub experts: u64,
    /// A token-embedding table that is only looked up (one row per token).
    pub lookup: u64,
}

impl Weights {
    /// Bytes a decode step of `batch` sequences reads: everything but the
    /// lookup table, with the experts that `batch` tokens route to — each
    /// token picks k of E, so (1 - (1 - k/E)^batch) of them on average.
    pub fn read_per_step(&self, shape: &ModelShape, batch: u32) -> f64 {
        let dense = self.total.saturating_sub(self.experts + self.lookup) as f64;
        if self.experts == 0 || shape.n_experts == 0 {
            return dense + self.experts as f64;
        }
        let k = f64::from(shape.n_experts_active);
        let e = f64::from(shape.n_experts);
        dense + self.experts as f64 * (1.0 - (1.0 - k / e).powf(f64::from(batch)))
    }
}

/// The weights: a GGUF's tensor table byte for byte, or parameters x bits.
pub fn weights(shape: &ModelShape, p: &Precision, engine: EngineKind) -> Weights {
    let share = |part: u64, total: u64| -> u64 {
        if shape.params == 0 {
            0
        } else {
            (part as f64 / shape.params as f64 * total as f64).round() as u64
        }
    };
    if let Some(total) = shape.weight_bytes {
        return Weights {
            total,
            experts: shape
                .expert_bytes
                .unwrap_or_else(|| share(shape.expert_params, total)),
            lookup: shape
                .lookup_bytes
                .unwrap_or_else(|| share(shape.lookup_params, total)),
        };
    }
    let llama_cpp = matches!(engine, EngineKind::Embedded | EngineKind::LlamaServer);
    if let (true, Some(f)) = (llama_cpp, p.file_type) {
        let (total, experts, lookup) = crate::ftype::weight_bytes(shape, &f);
        return Weights {
            total,
            experts,
            lookup,
        };
    }
    let bytes = |params: u64, bits: f64| (params as f64 * bits / 8.0).round() as u64;
    let expert_bits = p.bits_per_weight;
    // MXFP4 experts: the released checkpoints that vLLM and SGLang load
    // keep everything else at BF16 (llama.cpp's files: Q8_0, see ftype).
    let rest_bits = if p.name == "mxfp4" && shape.expert_params > 0 {
        16.0
    } else {
        p.bits_per_weight
    };
    let experts = bytes(shape.expert_params, expert_bits);
    let lookup = bytes(shape.lookup_params, rest_bits);
    let rest = bytes(
        shape
            .params
            .saturating_sub(shape.expert_params + shape.lookup_params),
        rest_bits,
    );
    Weights {
        total: experts + lookup + rest,
        experts,
        lookup,
    }
}

/// Quantizations tried, from the least lossy, when a model does not fit.
const LADDER: &[&str] = &["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k"];
/// What vLLM and SGLang load instead, from the least lossy.
const LADDER_VLLM: &[&str] = &["fp8", "int4"];

/// The quantizations an engine can be given, from the least lossy.
pub fn quantization_ladder(engine: EngineKind) -> &'static [&'static str] {
    match engine {
        EngineKind::Embedded | EngineKind::LlamaServer | EngineKind::Url => LADDER,
        EngineKind::Vllm | EngineKind::Sglang => LADDER_VLLM,
    }
}

pub fn estimate(shape: &ModelShape, hw: &Hardware, r: &PlanRequest) -> Estimate {
    let (mem, vllm, max_seq) = memory(shape, hw, r);
    let speed = speed(shape, hw, r);
    let gb = |b: u64| b as f64 / GB;
    let fits_users = match &vllm {
        Some(v) => v.kv_cache_bytes > 0 && v.max_concurrency >= f64::from(r.users),
        None => mem.left_bytes >= 0,
    };
    let fits_budget = mem.total_bytes <= mem.usable_bytes;
    let verdict = if fits_users && fits_budget {
        Verdict {
            kind: VerdictKind::Runs,
            precision: None,
            reason: format!(
                "{:.1} GB of {:.1} GB usable: {} sequences of {} tokens at once (room for {})",
                gb(mem.total_bytes),
                gb(mem.usable_bytes),
                r.users,
                r.context,
                if max_seq == u64::MAX {
                    "any number".to_string()
                } else {
                    max_seq.to_string()
                }
            ),
        }
    } else {
        // Would a smaller weight type do (files with their own types too)?
        let mut found = None;
        if shape.architecture != "bert" {
            for q in quantization_ladder(r.engine) {
                let Ok(p) = Precision::parse(q) else { continue };
                if p.bits_per_weight >= r.precision.bits_per_weight {
                    continue;
                }
                let mut s = shape.clone();
                s.weight_bytes = None;
                let rq = PlanRequest {
                    precision: p,
                    ..r.clone()
                };
                let (m, v, _) = memory(&s, hw, &rq);
                let ok = match &v {
                    Some(v) => v.kv_cache_bytes > 0 && v.max_concurrency >= f64::from(r.users),
                    None => m.left_bytes >= 0,
                } && m.total_bytes <= m.usable_bytes;
                if ok {
                    found = Some((q.to_string(), m.total_bytes));
                    break;
                }
            }
        }
        match found {
            Some((q, total)) => Verdict {
                kind: VerdictKind::RunsWithQuantization,
                precision: Some(q.clone()),
                reason: format!(
                    "{:.1} GB needed at {}, {:.1} GB usable; at {q} it needs {:.1} GB",
                    gb(mem.total_bytes),
                    r.precision.name,
                    gb(mem.usable_bytes),
                    gb(total)
                ),
            },
            None if !hw.unified && mem.weights_bytes as f64 > mem.usable_bytes as f64 * 0.5 => {
                Verdict {
                    kind: VerdictKind::NeedsOffload,
                    precision: None,
                    reason: format!(
                        "{:.1} GB needed, {:.1} GB of GPU memory even at 2-bit weights is too little: only with layers offloaded to the CPU (llama.cpp -ngl), at a fraction of the speed",
                        gb(mem.total_bytes),
                        gb(mem.usable_bytes)
                    ),
                }
            }
            None => Verdict {
                kind: VerdictKind::DoesNotFit,
                precision: None,
                reason: if mem.weights_bytes <= mem.usable_bytes {
                    format!(
                        "the weights ({:.1} GB) fit but {} sequences of {} tokens do not; at most {max_seq}",
                        gb(mem.weights_bytes),
                        r.users,
                        r.context
                    )
                } else {
                    format!(
                        "{:.1} GB needed, {:.1} GB usable, and no quantization down to 2 bits is enough",
                        gb(mem.total_bytes),
                        gb(mem.usable_bytes)
                    )
                },
            },
        }
    };
    Estimate {
        model: shape.id.clone(),
        hardware: hw.name.clone(),
        engine: r.engine,
        precision: r.precision.name.clone(),
        context: r.context,
        users: r.users,
        memory: mem,
        max_sequences: max_seq,
        vllm,
        speed,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog, hardware};

    fn req(engine: EngineKind, precision: &str, context: u32, users: u32) -> PlanRequest {
        PlanRequest {
            engine,
            precision: Precision::parse(precision).unwrap(),
            context,
            users,
            ..Default::default()
        }
    }

    #[test]
    fn the_guides_marketing_figure_is_not_physics() {
        // 7B at 16-bit on 273 GB/s: about 20 tokens/s for one stream, not 2,000.
        let e = estimate(
            &catalog::find("llama-2-7b").unwrap(),
            &hardware::find("gb10").unwrap(),
            &req(EngineKind::Embedded, "f16", 4096, 1),
        );
        let s = e.speed.unwrap();
        let peak = 273e9 / (6_738_415_616.0 * 2.0);
        assert!(s.single_stream_tokens_per_s < peak, "{s:?}");
        assert!(
            (13.0..21.0).contains(&s.single_stream_tokens_per_s),
            "{s:?}"
        );
        assert_eq!(e.verdict.kind, VerdictKind::Runs);
    }

    #[test]
    fn batching_raises_aggregate_not_single_stream() {
        let hw = hardware::find("h100-sxm").unwrap();
        let m = catalog::find("llama-3.1-8b").unwrap();
        let one = estimate(&m, &hw, &req(EngineKind::Vllm, "bf16", 4096, 1))
            .speed
            .unwrap();
        let many = estimate(&m, &hw, &req(EngineKind::Vllm, "bf16", 4096, 64))
            .speed
            .unwrap();
        assert!(many.aggregate_tokens_per_s > 10.0 * one.aggregate_tokens_per_s);
        assert!(many.per_user_tokens_per_s < one.per_user_tokens_per_s);
    }

    #[test]
    fn mixture_of_experts_reads_active_experts_at_batch_one() {
        let hw = hardware::find("gb10").unwrap();
        let mix = catalog::find("mixtral-8x7b").unwrap();
        let s = estimate(&mix, &hw, &req(EngineKind::Embedded, "q4_k", 4096, 1))
            .speed
            .unwrap();
        let dense_equiv = hw.achievable_bandwidth() / (mix.params as f64 * 4.5 / 8.0);
        assert!(s.single_stream_tokens_per_s > 2.5 * dense_equiv, "{s:?}");
    }

    #[test]
    fn verdicts() {
        let hw = hardware::find("gb10").unwrap();
        let big = catalog::find("llama-2-70b").unwrap();
        let e = estimate(&big, &hw, &req(EngineKind::Embedded, "f16", 4096, 4));
        assert_eq!(
            e.verdict.kind,
            VerdictKind::RunsWithQuantization,
            "{:?}",
            e.verdict
        );
        assert_eq!(e.verdict.precision.as_deref(), Some("q8_0"));
        let huge = catalog::find("qwen2.5-72b").unwrap();
        let rtx = hardware::find("rtx-4090").unwrap();
        let e = estimate(&huge, &rtx, &req(EngineKind::Embedded, "f16", 4096, 1));
        assert_eq!(e.verdict.kind, VerdictKind::NeedsOffload, "{:?}", e.verdict);
        let e = estimate(
            &catalog::find("gpt-oss-120b").unwrap(),
            &hardware::find("m3-max").unwrap(),
            &req(EngineKind::Embedded, "f16", 4096, 1),
        );
        assert_ne!(e.verdict.kind, VerdictKind::Runs);
    }

    #[test]
    fn vllm_semantics() {
        // Llama-3.1-8B bf16 on an 80 GiB H100 at 0.9: about 76.5 GB budget,
        // 16 GB weights, ~58 GB of KV at 128 KiB per token: ~450k tokens,
        // ~110 sequences of 4096.
        let e = estimate(
            &catalog::find("llama-3.1-8b").unwrap(),
            &hardware::find("h100-sxm").unwrap(),
            &req(EngineKind::Vllm, "bf16", 4096, 64),
        );
        let v = e.vllm.unwrap();
        assert_eq!(v.budget_bytes, 76_500_000_000);
        let tokens = v.kv_blocks * 16;
        assert!((400_000..500_000).contains(&tokens), "{v:?}");
        assert!((100.0..125.0).contains(&v.max_concurrency), "{v:?}");
        assert_eq!(e.verdict.kind, VerdictKind::Runs);
    }

    /// vLLM's own start-up figures, from a published log
    /// (vllm-project/vllm#10517: Llama-3.1-8B-Instruct, RTX 3090,
    /// gpu_memory_utilization 0.90, V0 without chunked prefill so the
    /// profiling batch is max_model_len, max_num_seqs 256). Nothing in the
    /// model was fitted to these numbers.
    #[test]
    fn vllm_kv_capacity_matches_published_start_up_logs() {
        let hw = hardware::find("rtx-3090").unwrap();
        let m = catalog::find("llama-3.1-8b").unwrap();
        for (max_len, blocks, concurrency) in [(20_000u32, 1952u64, 1.56f64), (29_000, 1478, 0.82)]
        {
            let e = estimate(
                &m,
                &hw,
                &PlanRequest {
                    engine: EngineKind::Vllm,
                    precision: Precision::parse("bf16").unwrap(),
                    context: max_len,
                    users: 256,
                    max_num_batched_tokens: max_len,
                    // The log is vLLM 0.6 (V0); V1 is the default now.
                    engine_version: EngineVersion::V0,
                    ..Default::default()
                },
            );
            let v = e.vllm.unwrap();
            let err = (v.kv_blocks as f64 - blocks as f64).abs() / blocks as f64;
            assert!(
                err < 0.10,
                "{max_len}: {} blocks predicted, {blocks} measured",
                v.kv_blocks
            );
            let err = (v.max_concurrency - concurrency).abs() / concurrency;
            assert!(
                err < 0.10,
                "{max_len}: {:.2}x predicted, {concurrency}x measured",
                v.max_concurrency
            );
        }
    }

    /// vLLM V1's start-up figures from a published log, a check (nothing
    /// was set from it): ilseokoh/vllm-gce, README.md at
    /// ede8ee4e36cf1ed10471b3ff38514159f71dfa58 — vLLM v0.15.1, "Initializing
    /// a V1 LLM engine", Llama-3.1-8B-Instruct in bf16 on a GCE
    /// a2-highgpu-1g (one A100 40 GB), enforce_eager (no CUDA graphs),
    /// max_model_len 131072, max_num_batched_tokens 8192, the default
    /// gpu_memory_utilization (0.9): "Model loading took 14.99 GiB",
    /// "Available KV cache memory: 19.28 GiB", "GPU KV cache size: 157,936
    /// tokens", "Maximum concurrency for 131,072 tokens per request: 1.20x".
    #[test]
    fn vllm_v1_kv_capacity_matches_a_published_v1_start_up_log() {
        let hw = hardware::find("a100-40gb").unwrap();
        let m = catalog::find("llama-3.1-8b").unwrap();
        let e = estimate(
            &m,
            &hw,
            &PlanRequest {
                engine: EngineKind::Vllm,
                precision: Precision::parse("bf16").unwrap(),
                context: 131_072,
                users: 256,
                max_num_batched_tokens: 8192,
                engine_version: EngineVersion::V1,
                ..Default::default()
            },
        );
        let v = e.vllm.unwrap();
        let err = (v.kv_tokens as f64 - 157_936.0).abs() / 157_936.0;
        assert!(
            err < 0.05,
            "{} KV tokens predicted, 157,936 in the log",
            v.kv_tokens
        );
        let gib = v.kv_cache_bytes as f64 / (1u64 << 30) as f64;
        assert!(
            (gib - 19.28).abs() / 19.28 < 0.05,
            "{gib:.2} GiB predicted, 19.28 in the log"
        );
        assert!(
            (v.max_concurrency - 1.20).abs() / 1.20 < 0.05,
            "{}",
            v.max_concurrency
        );
    }

    /// Decode speed on consumer GPUs against llama.cpp's own tables. These
    /// rows now live in the comparison table (`catalog/speed-checks.toml`,
    /// tested whole in `checks`); this keeps the two 2025 checks visible
    /// here. The early-2024 build of ggml-org/llama.cpp#4766 (F16 48.52,
    /// Q4_0 121.82, Q2_K 92.69 on a 3090), once asserted here, is excluded
    /// there: it predates every modelled llama.cpp generation.
    #[test]
    fn decode_speed_against_published_llama_cpp_figures() {
        // One token at a time (micro-batch 1) through Llama-3.1-8B Q4_0, at
        // depth 0 on a 3090 (#15802, master column) and at depth 32,768 on a
        // 4090, where the KV cache is read as much as the weights (#17505).
        let m = catalog::find("llama-3.1-8b").unwrap();
        for (hw, context, measured) in [("rtx-3090", 512, 155.02), ("rtx-4090", 66_048, 98.14)] {
            let hw = hardware::find(hw).unwrap();
            let tg = estimate(&m, &hw, &req(EngineKind::LlamaServer, "q4_0", context, 1))
                .speed
                .unwrap()
                .single_stream_tokens_per_s;
            assert!(
                (tg - measured).abs() / measured < 0.25,
                "{}: {tg:.1} predicted, {measured} measured",
                hw.id
            );
        }
    }

    /// Single-stream decode on a DGX Spark against llama.cpp's own published
    /// figures (ggml-org/llama.cpp benches/dgx-spark.md, build 6918, tg32 at
    /// depth 0). Since the structured decode model, all five rows are its
    /// GB10 calibration (fixed cost, memory share, Q8_0 and MXFP4 kernels:
    /// catalog/decode.toml); before, only the first set the one efficiency,
    /// to 1%. The bound is now the table's calibration tolerance; the GB10
    /// checks are other sources (checks.rs).
    #[test]
    fn gb10_decode_against_llama_cpp_on_a_dgx_spark() {
        let hw = hardware::find("gb10").unwrap();
        let gib = 1024f64.powi(3);
        let mut gemma_qat = catalog::find("gemma-3-4b").unwrap();
        // Google's QAT file keeps the (tied) embedding at higher precision
        // than llama-quantize would: plan it from its size as a GGUF would be.
        gemma_qat.weight_bytes = Some((2.35 * gib) as u64);
        gemma_qat.expert_bytes = Some(0);
        gemma_qat.lookup_bytes = Some(0);
        let cases = [
            (catalog::find("qwen2.5-7b").unwrap(), "q8_0", 29.30),
            (gemma_qat, "q4_0", 78.97),
            (catalog::find("gpt-oss-20b").unwrap(), "mxfp4", 84.10),
            (catalog::find("gpt-oss-120b").unwrap(), "mxfp4", 59.02),
            (catalog::find("qwen3-30b-a3b").unwrap(), "q8_0", 60.92),
        ];
        for (m, p, measured) in cases {
            let tg = estimate(&m, &hw, &req(EngineKind::LlamaServer, p, 32, 1))
                .speed
                .unwrap()
                .single_stream_tokens_per_s;
            let err = (tg - measured) / measured;
            assert!(
                err.abs() < 0.05,
                "{} {p}: {tg:.1} predicted, {measured} measured ({:+.1}%)",
                m.id,
                err * 100.0
            );
        }
    }

    fn single(id: &str, hw: &str, p: &str, generation: Option<&str>) -> Speed {
        estimate(
            &catalog::find(id).unwrap(),
            &hardware::find(hw).unwrap(),
            &PlanRequest {
                llama_cpp_generation: generation.map(str::to_string),
                ..req(EngineKind::LlamaServer, p, 128, 1)
            },
        )
        .speed
        .unwrap()
    }

    /// The fixed per-step cost is most of a tiny model's step and almost
    /// none of a huge one's.
    #[test]
    fn fixed_cost_dominates_tiny_models_and_vanishes_for_huge_ones() {
        let share = |s: &Speed| {
            let d = s.decode_model.as_ref().unwrap();
            d.fixed_s / (d.fixed_s + d.weights_s + d.kv_s)
        };
        let tiny = single("gemma-3-270m", "h100-sxm", "q4_0", None);
        let huge = single("llama-3.1-70b", "rtx-3090", "f16", None);
        assert!(share(&tiny) > 0.6, "{:?}", tiny.decode_model);
        assert!(share(&huge) < 0.02, "{:?}", huge.decode_model);
        // Below the bandwidth bound for the tiny model: its bytes alone would
        // allow several times the speed.
        let d = tiny.decode_model.unwrap();
        assert!(1.0 / d.weights_s > 3.0 * tiny.single_stream_tokens_per_s);
    }

    /// Each tensor type reads at its own kernel efficiency: on Metal (2023)
    /// and CUDA (2024) 4-bit kernels reach a smaller share than 16-bit ones,
    /// so 4-bit is less than 4x faster than 16-bit even beyond fixed costs.
    #[test]
    fn kernel_efficiency_per_type() {
        let cat = crate::decode::catalog().unwrap();
        let cuda24 = cat
            .constants(&hardware::find("rtx-4090").unwrap(), Some("2024"))
            .unwrap();
        assert!(cuda24.kernels.legacy < 0.8 * cuda24.kernels.f16);
        let metal = cat
            .constants(&hardware::find("m4-max").unwrap(), None)
            .unwrap();
        assert!(metal.kernels.legacy < metal.kernels.f16);
        // Bytes over time of the weights part, per type.
        for (hw, generation) in [("rtx-4090", Some("2024")), ("m4-max", None)] {
            let f16 = single("llama-3.1-8b", hw, "f16", generation);
            let q4 = single("llama-3.1-8b", hw, "q4_0", generation);
            let (df, dq) = (f16.decode_model.unwrap(), q4.decode_model.unwrap());
            let m = catalog::find("llama-3.1-8b").unwrap();
            let bytes =
                |p: &str| weights(&m, &Precision::parse(p).unwrap(), EngineKind::LlamaServer);
            let rate = |w: Weights, t: f64| (w.total - w.lookup) as f64 / t;
            assert!(
                rate(bytes("q4_0"), dq.weights_s) < rate(bytes("f16"), df.weights_s),
                "{hw}"
            );
        }
    }

    /// A prediction names its llama.cpp generation; an older one is slower
    /// where it is modelled, and a missing constant is borrowed and said.
    #[test]
    fn predictions_name_their_llama_cpp_generation() {
        let now = single("llama-3.1-8b", "rtx-4090", "q4_k_m", None);
        let then = single("llama-3.1-8b", "rtx-4090", "q4_k_m", Some("2024"));
        assert_eq!(
            now.decode_model.as_ref().unwrap().llama_cpp_generation,
            "2025"
        );
        assert_eq!(
            then.decode_model.as_ref().unwrap().llama_cpp_generation,
            "2024"
        );
        assert!(then.single_stream_tokens_per_s < now.single_stream_tokens_per_s);
        let h100 = single("llama-3.1-8b", "h100-sxm", "q4_k_m", None);
        let borrowed = &h100.decode_model.unwrap().borrowed;
        assert!(borrowed.iter().any(|b| b.contains("2024")), "{borrowed:?}");
    }

    /// Every llama.cpp estimate on a profiled device carries the range of
    /// its class's check errors, around the number (text and JSON).
    #[test]
    fn speed_estimates_carry_a_range() {
        let s = single("llama-3.1-8b", "h100-pcie", "q4_k_m", None);
        let r = s.single_stream_range.clone().unwrap();
        assert_eq!(r.from, "cuda-datacenter");
        assert!(r.low_tokens_per_s < s.single_stream_tokens_per_s);
        assert!(r.high_tokens_per_s >= s.single_stream_tokens_per_s);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["single_stream_range"]["low_tokens_per_s"].is_f64());
        assert!(json["single_stream_tokens_per_s"].is_f64());
    }

    /// vLLM V1 (default) profiles max_num_batched_tokens; V0 without
    /// chunked prefill a whole max_model_len batch: at a long context V1
    /// has more room for KV. A draft's layers share the pool.
    #[test]
    fn vllm_versions_and_drafts() {
        let hw = hardware::find("h100-sxm").unwrap();
        let m = catalog::find("llama-3.1-70b").unwrap();
        let base = PlanRequest {
            engine: EngineKind::Vllm,
            precision: Precision::parse("fp8").unwrap(),
            context: 32_768,
            users: 8,
            ..Default::default()
        };
        let v1 = estimate(&m, &hw, &base).vllm.unwrap();
        let v0 = estimate(
            &m,
            &hw,
            &PlanRequest {
                engine_version: EngineVersion::V0,
                ..base.clone()
            },
        )
        .vllm
        .unwrap();
        assert_eq!(v1.engine_version, EngineVersion::V1);
        assert_eq!((v1.profiled_tokens, v0.profiled_tokens), (8192, 32_768));
        assert!(v1.activation_peak_bytes < v0.activation_peak_bytes);
        assert!(v1.kv_tokens > v0.kv_tokens, "{v1:?} {v0:?}");
        assert!(v1.outside_budget_bytes > 0 && v0.outside_budget_bytes == 0);
        // A Llama-3.2-1B draft: its 16 layers' KV ride along with the 80
        // of the target, and its weights sit beside them.
        let draft = Draft::model(
            &catalog::find("llama-3.2-1b").unwrap(),
            &base.precision,
            base.kv_bytes_per_elem,
        );
        let with = estimate(
            &m,
            &hw,
            &PlanRequest {
                draft: Some(draft.clone()),
                ..base.clone()
            },
        )
        .vllm
        .unwrap();
        assert!(with.kv_tokens < v1.kv_tokens);
        let per_tok = m.kv_bytes_per_token(2.0);
        let expect = (v1.kv_cache_bytes - draft.weights_bytes as i64) as f64
            / (per_tok + draft.kv_bytes_per_token);
        assert!((with.kv_tokens as f64 - expect).abs() < 64.0, "{with:?}");
        // An EAGLE-style head: one extra layer of the target's shape.
        let head = Draft::layers(&m, 1, &base.precision, 2.0);
        assert_eq!(head.kv_bytes_per_token, m.kv_bytes_per_token_layer(2.0));
        assert!("v0".parse::<EngineVersion>().unwrap() == EngineVersion::V0);
        assert!("V1".parse::<EngineVersion>().unwrap() == EngineVersion::V1);
        assert!("v2".parse::<EngineVersion>().is_err());
    }

    /// vLLM on a DGX Spark (NVIDIA/dgx-spark-playbooks#79, vLLM 0.15):
    /// the profile's vLLM efficiency was set from Llama-3.3-70B NVFP4
    /// (4.0-4.2 tokens/s); gpt-oss-120b on the same image (33-34 tokens/s)
    /// is the check.
    #[test]
    fn gb10_decode_against_vllm_on_a_dgx_spark() {
        let hw = hardware::find("gb10").unwrap();
        let tg = |id: &str, p: &str| {
            estimate(
                &catalog::find(id).unwrap(),
                &hw,
                &req(EngineKind::Vllm, p, 2048, 1),
            )
            .speed
            .unwrap()
            .single_stream_tokens_per_s
        };
        let llama = tg("llama-3.1-70b", "nvfp4");
        assert!((llama - 4.1).abs() / 4.1 < 0.02, "{llama}");
        let oss = tg("gpt-oss-120b", "mxfp4");
        assert!((oss - 33.5).abs() / 33.5 < 0.25, "{oss}");
    }

    #[test]
    fn embedding_models_have_no_kv_cache() {
        let e = estimate(
            &catalog::find("bge-base-en-v1.5").unwrap(),
            &hardware::find("gb10").unwrap(),
            &req(EngineKind::Vllm, "f16", 512, 32),
        );
        assert_eq!(e.memory.kv_cache_bytes, 0);
        assert_eq!(e.verdict.kind, VerdictKind::Runs);
        assert!(e.vllm.is_none() && e.speed.is_none());
        assert!((e.memory.weights_bytes as f64 - 109_482_240.0 * 2.0).abs() < 1.0);
    }

    #[test]
    fn quantized_kv_cache_holds_more_sequences() {
        let hw = hardware::find("gb10").unwrap();
        let m = catalog::find("llama-2-13b").unwrap();
        let f16 = estimate(&m, &hw, &req(EngineKind::Embedded, "q8_0", 8192, 4));
        let q8 = estimate(
            &m,
            &hw,
            &PlanRequest {
                kv_bytes_per_elem: 34.0 / 32.0,
                ..req(EngineKind::Embedded, "q8_0", 8192, 4)
            },
        );
        assert!(q8.memory.kv_cache_bytes * 18 < f16.memory.kv_cache_bytes * 10);
        assert!(q8.max_sequences > f16.max_sequences * 18 / 10);
    }

    #[test]
    fn sliding_window_caps_kv() {
        let g = catalog::find("gemma-3-270m").unwrap();
        let long = kv_per_sequence(&g, 32768, 2.0);
        let full = g.kv_bytes_per_token(2.0) * 32768.0;
        assert!(long < full / 4.0);
    }
}
