//! What an estimate answers: memory, speed and the verdict.

use super::*;

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
    /// Set where these speeds were measured on this machine (`aula
    /// assess`), not predicted: how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<String>,
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
