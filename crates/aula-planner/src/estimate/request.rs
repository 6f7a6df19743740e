//! What is asked of the planner: the precision, the engine and its version,
//! context, users, a draft model.

use super::*;

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
