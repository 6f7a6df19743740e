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

/// Weight precision: a llama.cpp file type (q4_k_m, q8_0, ... : per-tensor
/// types as llama-quantize picks them), a single ggml type, or what vLLM and
/// SGLang load (bf16, fp16, fp8, int8, int4, nf4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Precision {
    pub name: String,
    /// Bits per weight of most weights (the file type's main type).
    pub bits_per_weight: f64,
    /// Matrix products run at the 8-bit tensor rate.
    pub eight_bit_compute: bool,
    #[serde(skip)]
    pub file_type: Option<FileType>,
}

impl Precision {
    pub fn parse(name: &str) -> Result<Precision, String> {
        let n = name.to_ascii_lowercase();
        let mut file_type = None;
        let (bits, eight) = match n.as_str() {
            "fp16" | "f16" | "bf16" | "float16" | "bfloat16" => {
                file_type = FileType::parse(if n == "bf16" || n == "bfloat16" {
                    "bf16"
                } else {
                    "f16"
                });
                (16.0, false)
            }
            "fp8" => (8.0, true),
            "int8" => (8.0, true),
            "int4" | "awq" | "gptq" => (4.25, false),
            "nf4" => (4.127, false),
            other => match (
                FileType::parse(other),
                crate::ggml::GgmlType::from_name(other),
            ) {
                (Some(f), _) => {
                    file_type = Some(f);
                    (f.base_bits(), f.base_bits() <= 9.0)
                }
                (None, Some(t)) => (t.bits_per_weight(), t.bits_per_weight() <= 9.0),
                (None, None) => {
                    return Err(format!(
                        "unknown precision `{name}`; use bf16, fp16, fp8, int8, int4, nf4, a llama.cpp file type (q8_0, q6_k, q5_k_m, q4_k_m, q4_0, q3_k_m, q2_k, mxfp4, ...) or a ggml type"
                    ));
                }
            },
        };
        Ok(Precision {
            name: file_type.map_or(n, |f| f.name.to_string()),
            bits_per_weight: bits,
            eight_bit_compute: eight,
            file_type,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    pub engine: EngineKind,
    pub precision: Precision,
    /// Tokens per sequence (prompt + completion): max_model_len for vLLM.
    pub context: u32,
    /// Sequences served at once (slots, max_num_seqs).
    pub users: u32,
    /// llama.cpp micro-batch.
    pub n_ubatch: u32,
    /// Bytes per KV element: 2 for 16-bit, about 1.06 for q8_0.
    pub kv_bytes_per_elem: f64,
    /// vLLM `--gpu-memory-utilization` (SGLang `--mem-fraction-static`).
    pub gpu_memory_utilization: f64,
    /// Prompt length for time to first token.
    pub prompt_tokens: u32,
    /// vLLM's `--max-num-batched-tokens`, which sizes its profiling run
    /// (8192 in the V1 API server; V0 without chunked prefill: max_model_len).
    pub max_num_batched_tokens: u32,
    /// Which vLLM engine's memory semantics (V1 unless asked).
    pub engine_version: EngineVersion,
    /// vLLM speculative decoding: the draft whose layers share the KV pool.
    pub draft: Option<Draft>,
    /// The llama.cpp generation the speed assumes (a `catalog/decode.toml`
    /// id: 2023, 2024, 2025); None: the current one.
    pub llama_cpp_generation: Option<String>,
}

/// vLLM's engine: V1 (the default since vLLM 0.8) or the older V0. They
/// size the KV cache differently (see [`FORMULAS`], "vLLM").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineVersion {
    #[default]
    V1,
    V0,
}

impl std::str::FromStr for EngineVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<EngineVersion, String> {
        match s.to_ascii_lowercase().trim_start_matches('v') {
            "1" => Ok(EngineVersion::V1),
            "0" => Ok(EngineVersion::V0),
            _ => Err(format!("unknown engine version `{s}`; use v1 or v0")),
        }
    }
}

/// A speculative-decoding draft for vLLM: its weights sit beside the
/// target's, and its attention layers take KV blocks from the same pool
/// (every cached token holds the target's and the draft's KV).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Draft {
    pub name: String,
    pub weights_bytes: u64,
    pub n_layers: u32,
    pub kv_bytes_per_token: f64,
}

impl Draft {
    /// A separate draft model (e.g. Llama-3.2-1B for Llama-3.1-70B), at the
    /// target's precision and KV type.
    pub fn model(shape: &ModelShape, precision: &Precision, kv_bytes_per_elem: f64) -> Draft {
        Draft {
            name: shape.id.clone(),
            weights_bytes: weights(shape, precision, EngineKind::Vllm).total,
            n_layers: shape.n_layers,
            kv_bytes_per_token: shape.kv_bytes_per_token(kv_bytes_per_elem),
        }
    }

    /// A draft head of `layers` decoder layers of the target's own shape
    /// (EAGLE, MTP): that many extra KV layers, and their weights.
    pub fn layers(
        target: &ModelShape,
        layers: u32,
        precision: &Precision,
        kv_bytes_per_elem: f64,
    ) -> Draft {
        let w = weights(target, precision, EngineKind::Vllm);
        let per_layer = w.total.saturating_sub(w.lookup) / u64::from(target.n_layers.max(1));
        Draft {
            name: format!("{} draft head ({layers} layers)", target.id),
            weights_bytes: per_layer * u64::from(layers),
            n_layers: layers,
            kv_bytes_per_token: target.kv_bytes_per_token_layer(kv_bytes_per_elem)
                * f64::from(layers),
        }
    }
}

impl Default for PlanRequest {
    fn default() -> Self {
        PlanRequest {
            engine: EngineKind::Embedded,
            precision: Precision {
                name: "f16".into(),
                bits_per_weight: 16.0,
                eight_bit_compute: false,
                file_type: FileType::parse("f16"),
            },
            context: 4096,
            users: 4,
            n_ubatch: 512,
            kv_bytes_per_elem: 2.0,
            gpu_memory_utilization: 0.9,
            prompt_tokens: 512,
            max_num_batched_tokens: 8192,
            engine_version: EngineVersion::V1,
            draft: None,
            llama_cpp_generation: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    pub weights_bytes: u64,
    pub kv_bytes_per_token: f64,
    pub kv_bytes_per_sequence: u64,
    pub kv_cache_bytes: u64,
    /// Compute and output buffers, activation peak, CUDA context.
    pub overhead_bytes: u64,
    pub total_bytes: u64,
    pub usable_bytes: u64,
    /// usable - total (negative: does not fit).
    pub left_bytes: i64,
    /// llama.cpp's own buffers, for the llama.cpp engines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llama_cpp: Option<llamacpp::LlamaCppMemory>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VllmFigures {
    pub budget_bytes: u64,
    pub activation_peak_bytes: u64,
    pub kv_cache_bytes: i64,
    pub kv_blocks: u64,
    /// What vLLM prints as "Maximum concurrency for N tokens per request".
    pub max_concurrency: f64,
    /// The engine whose semantics these are.
    pub engine_version: EngineVersion,
    /// Tokens profiled for the activation peak.
    pub profiled_tokens: u32,
    /// Inside the budget besides weights, activations and KV (V1: memory
    /// outside PyTorch; V0: CUDA context, graphs, allocator slack).
    pub non_torch_bytes: u64,
    /// Taken beyond the budget (V1: CUDA graphs, captured after the KV
    /// cache is allocated).
    pub outside_budget_bytes: u64,
    /// What vLLM prints as "GPU KV cache size: N tokens".
    pub kv_tokens: u64,
    /// A draft's weights and its KV per token (0 without one).
    pub draft_weights_bytes: u64,
    pub draft_kv_bytes_per_token: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Speed {
    pub single_stream_tokens_per_s: f64,
    pub aggregate_tokens_per_s: f64,
    pub per_user_tokens_per_s: f64,
    /// "bandwidth" or "compute": what limits decoding at `users`.
    pub decode_bound: &'static str,
    pub prefill_tokens_per_s: f64,
    pub time_to_first_token_s: f64,
    /// The range single-stream decode falls in, from the check set's errors
    /// for this device class and engine (None: too few checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single_stream_range: Option<SpeedRange>,
    /// The structured decode model's parts (llama.cpp engines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_model: Option<DecodeDetail>,
}

/// Single-stream decode as a range: what the check set's spread says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeedRange {
    pub low_tokens_per_s: f64,
    pub high_tokens_per_s: f64,
    /// The device class (or `vllm`) whose check rows set it.
    pub from: String,
    pub checks: usize,
    pub within_25_percent: usize,
}

/// How one single-stream step splits (the structured decode model).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodeDetail {
    pub llama_cpp_generation: String,
    pub device_class: String,
    pub fixed_s: f64,
    pub weights_s: f64,
    pub kv_s: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub borrowed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Runs,
    RunsWithQuantization,
    NeedsOffload,
    DoesNotFit,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// The precision that makes it fit, for `runs_with_quantization`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub model: String,
    pub hardware: String,
    pub engine: EngineKind,
    pub precision: String,
    pub context: u32,
    pub users: u32,
    pub memory: Memory,
    /// The most sequences of `context` tokens that fit beside the weights.
    pub max_sequences: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vllm: Option<VllmFigures>,
    /// None where the profile has no bandwidth figure (a detected CPU).
    pub speed: Option<Speed>,
    pub verdict: Verdict,
}

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

/// Memory for the request on the hardware.
fn memory(
    shape: &ModelShape,
    hw: &Hardware,
    r: &PlanRequest,
) -> (Memory, Option<VllmFigures>, u64) {
    let weights = weights(shape, &r.precision, r.engine).total;
    let kv_tok = if shape.architecture == "bert" {
        0.0
    } else {
        shape.kv_bytes_per_token(r.kv_bytes_per_elem)
    };
    let kv_seq = kv_per_sequence(shape, r.context, r.kv_bytes_per_elem);
    let usable = hw.usable_bytes();
    let gpu = hw.peak_tflops_16bit > 0.0 && !hw.id.starts_with("detected-cpu");
    if shape.architecture == "bert" {
        // An encoder keeps nothing between requests: weights plus the
        // activations of one batch of `users` inputs of `context` tokens.
        let activation = u64::from(r.users)
            * u64::from(r.context.min(shape.max_context.max(1)))
            * (4 * u64::from(shape.hidden) + u64::from(shape.ffn))
            * 4;
        let overhead = activation + if gpu { CUDA_CONTEXT } else { 0 };
        let total = weights + overhead;
        return (
            Memory {
                weights_bytes: weights,
                kv_bytes_per_token: 0.0,
                kv_bytes_per_sequence: 0,
                kv_cache_bytes: 0,
                overhead_bytes: overhead,
                total_bytes: total,
                usable_bytes: usable,
                left_bytes: usable as i64 - total as i64,
                llama_cpp: None,
            },
            None,
            u64::MAX,
        );
    }
    match r.engine {
        // A `url` model is never planned (see `EngineKind`).
        EngineKind::Embedded | EngineKind::LlamaServer | EngineKind::Url => {
            let mut s = shape.clone();
            s.weight_bytes = Some(weights);
            let lc = llamacpp::memory(
                &s,
                &EngineSettings {
                    context: r.context,
                    parallel: r.users,
                    n_ubatch: r.n_ubatch,
                    kv_bytes_per_elem: r.kv_bytes_per_elem,
                },
            );
            let overhead = lc.compute_buffer_bytes
                + lc.output_buffer_bytes
                + if gpu { CUDA_CONTEXT } else { 0 };
            let total = lc.weights_bytes + lc.kv_cache_bytes + overhead;
            let fixed = weights + overhead;
            let max_seq = if kv_seq > 0.0 {
                (usable.saturating_sub(fixed) as f64 / kv_seq).floor() as u64
            } else {
                u64::MAX
            };
            (
                Memory {
                    weights_bytes: weights,
                    kv_bytes_per_token: kv_tok,
                    kv_bytes_per_sequence: kv_seq.round() as u64,
                    kv_cache_bytes: lc.kv_cache_bytes,
                    overhead_bytes: overhead,
                    total_bytes: total,
                    usable_bytes: usable,
                    left_bytes: usable as i64 - total as i64,
                    llama_cpp: Some(lc),
                },
                None,
                max_seq,
            )
        }
        EngineKind::Vllm | EngineKind::Sglang => {
            // vLLM's fraction is of the device memory CUDA reports (usable_gb).
            let device = usable;
            let budget = (device as f64 * r.gpu_memory_utilization) as u64;
            let ffn = u64::from(shape.ffn) * u64::from(shape.n_experts_active.max(1));
            let v1 = r.engine_version == EngineVersion::V1;
            // V1 profiles one batch of max_num_batched_tokens (chunked
            // prefill is always on); V0 without chunked prefill must fit a
            // whole max_model_len prompt in one batch.
            let profiled = if v1 {
                r.max_num_batched_tokens
            } else {
                r.max_num_batched_tokens.max(r.context)
            };
            let activation = if r.engine == EngineKind::Vllm {
                u64::from(profiled) * (4 * u64::from(shape.hidden) + 2 * ffn) * 2
                    + u64::from(r.users) * u64::from(shape.vocab) * 4
            } else {
                0
            };
            let (non_torch, outside) = match (r.engine, v1) {
                (EngineKind::Vllm, true) => (VLLM_V1_NON_TORCH, VLLM_V1_CUDA_GRAPHS),
                _ => (VLLM_FIXED, 0),
            };
            let (draft_w, draft_kv) = match (&r.draft, r.engine) {
                (Some(d), EngineKind::Vllm) => (d.weights_bytes, d.kv_bytes_per_token),
                _ => (0, 0.0),
            };
            let kv_cache = budget as i64
                - weights as i64
                - draft_w as i64
                - activation as i64
                - non_torch as i64;
            // A block holds 16 tokens of every attention layer, the
            // draft's included.
            let block_bytes = (kv_tok + draft_kv) * VLLM_BLOCK as f64;
            let blocks = if kv_cache > 0 && block_bytes > 0.0 {
                (kv_cache as f64 / block_bytes).floor() as u64
            } else {
                0
            };
            let max_conc = (blocks * VLLM_BLOCK) as f64 / f64::from(r.context.max(1));
            // vLLM (and SGLang's static fraction) takes its whole budget up
            // front; V1's CUDA graphs come on top.
            let total = budget.max(weights + draft_w + activation + non_torch) + outside;
            let vllm = VllmFigures {
                budget_bytes: budget,
                activation_peak_bytes: activation,
                kv_cache_bytes: kv_cache,
                kv_blocks: blocks,
                max_concurrency: max_conc,
                engine_version: r.engine_version,
                profiled_tokens: profiled,
                non_torch_bytes: non_torch,
                outside_budget_bytes: outside,
                kv_tokens: blocks * VLLM_BLOCK,
                draft_weights_bytes: draft_w,
                draft_kv_bytes_per_token: draft_kv,
            };
            (
                Memory {
                    weights_bytes: weights,
                    kv_bytes_per_token: kv_tok,
                    kv_bytes_per_sequence: kv_seq.round() as u64,
                    kv_cache_bytes: kv_cache.max(0) as u64,
                    overhead_bytes: activation + non_torch + outside + draft_w,
                    total_bytes: total,
                    usable_bytes: usable,
                    left_bytes: usable as i64 - total as i64,
                    llama_cpp: None,
                },
                Some(vllm),
                max_conc.floor() as u64,
            )
        }
    }
}

/// The weights by ggml type and role, for the llama.cpp engines: the file
/// type's per-tensor rules, or (a GGUF, a size given) one type for all —
/// the file type's main type, else the one its bits per weight point to.
fn typed_weights(shape: &ModelShape, p: &Precision, w: &Weights) -> TypeBytes {
    if let (None, Some(f)) = (shape.weight_bytes, p.file_type) {
        return crate::ftype::bytes_by_type(shape, &f);
    }
    let ty = match p.file_type {
        Some(f) if p.name != "gguf" => f.base_type(),
        _ => {
            let bits = w.total as f64 * 8.0 / shape.params.max(1) as f64;
            if bits >= 12.0 {
                "F16"
            } else if bits >= 7.5 {
                "Q8_0"
            } else {
                "Q4_K"
            }
        }
    };
    let dense = w.total.saturating_sub(w.experts + w.lookup);
    TypeBytes {
        parts: vec![
            (ty, Role::Dense, dense),
            (ty, Role::Expert, w.experts),
            (ty, Role::Lookup, w.lookup),
        ],
    }
}

/// The share of the routed experts that `batch` tokens touch: each token
/// picks k of E, so (1 - (1 - k/E)^batch) of them on average.
fn expert_share(shape: &ModelShape, batch: u32) -> f64 {
    if shape.n_experts == 0 {
        return 1.0;
    }
    let k = f64::from(shape.n_experts_active);
    let e = f64::from(shape.n_experts);
    1.0 - (1.0 - k / e).powf(f64::from(batch))
}

/// The structured model's split of a llama.cpp step, and its constants.
pub type DecodeParts = (StepTime, Constants);

/// One decode step of `batch` sequences: seconds, whether compute bounds
/// it, and (llama.cpp engines) the structured model's parts of the
/// memory-side time.
pub fn decode_step(
    shape: &ModelShape,
    hw: &Hardware,
    r: &PlanRequest,
    batch: u32,
) -> Option<(f64, bool, Option<DecodeParts>)> {
    if hw.peak_bandwidth_gbs <= 0.0 || shape.architecture == "bert" {
        return None;
    }
    let w = weights(shape, &r.precision, r.engine);
    let flops = hw.achievable_flops(r.precision.eight_bit_compute);
    // Each sequence half full on average; sliding-window layers read at
    // most their window.
    let kv_half = kv_per_sequence(shape, r.context / 2, r.kv_bytes_per_elem);
    // Matrix products per token: the active parameters but a lookup table.
    let matmul_params = shape.params_active.saturating_sub(shape.lookup_params) as f64;
    let t_compute = if flops > 0.0 {
        2.0 * matmul_params * f64::from(batch) / flops
    } else {
        0.0
    };
    let kv = f64::from(batch) * kv_half;
    let llama_cpp = matches!(r.engine, EngineKind::Embedded | EngineKind::LlamaServer);
    let structured = llama_cpp
        .then(|| crate::decode::catalog().ok())
        .flatten()
        .and_then(|cat| cat.constants(hw, r.llama_cpp_generation.as_deref()).ok());
    let (t_mem, parts) = match structured {
        Some(c) => {
            let typed = typed_weights(shape, &r.precision, &w);
            let share = expert_share(shape, batch);
            let read: Vec<(&str, f64)> = typed
                .parts
                .iter()
                .map(|&(ty, role, bytes)| {
                    let b = bytes as f64;
                    let b = match role {
                        Role::Dense => b,
                        Role::Expert => b * share,
                        Role::Lookup => 0.0,
                    };
                    (ty, b)
                })
                .collect();
            let t = crate::decode::step_time(&c, hw.peak_bandwidth_gbs, shape.n_layers, &read, kv);
            (t.total(), Some((t, c)))
        }
        None => {
            let bw = match r.engine {
                EngineKind::Embedded | EngineKind::LlamaServer | EngineKind::Url => {
                    hw.achievable_bandwidth()
                }
                EngineKind::Vllm | EngineKind::Sglang => hw.achievable_bandwidth_vllm(),
            };
            ((w.read_per_step(shape, batch) + kv) / bw, None)
        }
    };
    Some((t_mem.max(t_compute), t_compute > t_mem, parts))
}

fn speed(shape: &ModelShape, hw: &Hardware, r: &PlanRequest) -> Option<Speed> {
    let (t1, _, parts) = decode_step(shape, hw, r, 1)?;
    let users = r.users.max(1);
    let (tb, compute_bound, _) = decode_step(shape, hw, r, users)?;
    let flops = hw.achievable_flops(r.precision.eight_bit_compute);
    let matmul_params = shape.params_active.saturating_sub(shape.lookup_params) as f64;
    let prefill = if flops > 0.0 {
        flops / (2.0 * matmul_params)
    } else {
        0.0
    };
    let ttft = if prefill > 0.0 {
        f64::from(r.prompt_tokens) / prefill + t1
    } else {
        t1
    };
    let single = 1.0 / t1;
    let from = match &parts {
        Some((_, c)) => Some(c.class.clone()),
        None if r.engine == EngineKind::Vllm => Some("vllm".to_string()),
        None => None,
    };
    let single_stream_range = from.and_then(|from| {
        let s = crate::checks::spread(&from)?;
        // measured = predicted / (1 + error): the worst errors either way
        // bound it (0 always inside).
        Some(SpeedRange {
            low_tokens_per_s: single / (1.0 + s.max_error.max(0.0)),
            high_tokens_per_s: single / (1.0 + s.min_error.min(0.0)),
            from,
            checks: s.checks,
            within_25_percent: s.within_25,
        })
    });
    Some(Speed {
        single_stream_tokens_per_s: single,
        aggregate_tokens_per_s: f64::from(users) / tb,
        per_user_tokens_per_s: 1.0 / tb,
        decode_bound: if compute_bound {
            "compute"
        } else {
            "bandwidth"
        },
        prefill_tokens_per_s: prefill,
        time_to_first_token_s: ttft,
        single_stream_range,
        decode_model: parts.map(|(t, c)| DecodeDetail {
            llama_cpp_generation: c.generation,
            device_class: c.class,
            fixed_s: t.fixed_s,
            weights_s: t.weights_s,
            kv_s: t.kv_s,
            borrowed: c.borrowed,
        }),
    })
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
