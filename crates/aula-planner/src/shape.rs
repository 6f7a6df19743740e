//! One representation of a model's shape, whatever it was read from
//! (a GGUF file, a Hugging Face config.json, or the built-in catalog).

use crate::gguf::{GgufFile, Value};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub id: String,
    pub architecture: String,
    pub n_layers: u32,
    pub hidden: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim_k: u32,
    pub head_dim_v: u32,
    pub vocab: u32,
    pub ffn: u32,
    #[serde(default)]
    pub n_experts: u32,
    #[serde(default)]
    pub n_experts_active: u32,
    /// Window of the sliding-window attention layers, if any.
    #[serde(default)]
    pub sliding_window: Option<u32>,
    /// How many layers use the sliding window (the rest attend to everything).
    #[serde(default)]
    pub n_swa_layers: u32,
    #[serde(default)]
    pub tied_embeddings: bool,
    pub max_context: u32,
    /// Total parameters.
    pub params: u64,
    /// Parameters used per token (differs from `params` for mixture-of-experts).
    pub params_active: u64,
    /// Parameters of the routed experts' MLPs, all experts together (0 for a
    /// dense model): decoding one token reads only the chosen experts' share.
    #[serde(default)]
    pub expert_params: u64,
    /// Parameters of a token-embedding table that is not also the output
    /// head: decoding looks up one row per token and never reads it whole.
    #[serde(default)]
    pub lookup_params: u64,
    /// Exact weight bytes, when read from a GGUF's tensor table.
    #[serde(default)]
    pub weight_bytes: Option<u64>,
    /// Exact bytes of the experts and of the lookup-only embedding table,
    /// from a GGUF's tensor table (their own quantization types).
    #[serde(default)]
    pub expert_bytes: Option<u64>,
    #[serde(default)]
    pub lookup_bytes: Option<u64>,
    /// Exact bytes of the token-embedding table (`token_embd.weight`, tied
    /// or not) and of an untied head (`output.weight`), from a GGUF's tensor
    /// table: their types often differ from the layers' (a Q8_0 table
    /// beside Q4 layers, a Q6_K head).
    #[serde(default)]
    pub embedding_bytes: Option<u64>,
    #[serde(default)]
    pub head_bytes: Option<u64>,
    /// The precision the weights were released in when it is not 16-bit
    /// (the catalog's gpt-oss: MXFP4; a config.json's `quantization_config`:
    /// AWQ/GPTQ int4, FP8, NF4...); what `aula plan` uses by default.
    #[serde(default)]
    pub released_as: Option<String>,
    /// Where the figures come from.
    pub source: String,
}

impl ModelShape {
    /// K and V bytes one token occupies in one full-attention layer at
    /// `bytes_per_elem` (2 for f16/bf16).
    pub fn kv_bytes_per_token_layer(&self, bytes_per_elem: f64) -> f64 {
        f64::from(self.n_kv_heads) * f64::from(self.head_dim_k + self.head_dim_v) * bytes_per_elem
    }

    /// KV bytes per token of context summed over all layers, as if every layer
    /// kept the whole context (the usual "KV per token" figure).
    pub fn kv_bytes_per_token(&self, bytes_per_elem: f64) -> f64 {
        self.kv_bytes_per_token_layer(bytes_per_elem) * f64::from(self.n_layers)
    }

    pub fn n_full_layers(&self) -> u32 {
        self.n_layers - self.n_swa_layers
    }
}

fn per_layer_max(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Array { items, .. } => items.iter().filter_map(Value::as_u64).max(),
        other => other.as_u64(),
    }
}

/// How many of `n_layers` use sliding-window attention in llama.cpp, by
/// architecture (llama.cpp sets these patterns in code, not in the GGUF).
fn swa_layers(arch: &str, n_layers: u32, gguf: &GgufFile) -> u32 {
    if let Some(Value::Array { items, .. }) =
        gguf.get(&format!("{arch}.attention.sliding_window_pattern"))
    {
        return items
            .iter()
            .filter(|v| matches!(v, Value::Bool(true)))
            .count() as u32;
    }
    match arch {
        // Five local layers, then one global.
        "gemma3" => n_layers - n_layers / 6,
        // Alternating local and global.
        "gemma2" | "gpt-oss" | "cohere2" => n_layers - n_layers / 2,
        _ => 0,
    }
}

impl ModelShape {
    pub fn from_gguf(id: &str, g: &GgufFile) -> Result<ModelShape, String> {
        let arch = g
            .architecture()
            .ok_or("the GGUF has no general.architecture")?
            .to_string();
        let need = |suffix: &str| -> Result<u64, String> {
            g.arch_u64(suffix)
                .ok_or_else(|| format!("the GGUF has no {arch}.{suffix}"))
        };
        let n_layers = need("block_count")? as u32;
        let hidden = need("embedding_length")? as u32;
        let n_heads = per_layer_max(g.get(&format!("{arch}.attention.head_count")))
            .ok_or_else(|| format!("the GGUF has no {arch}.attention.head_count"))?
            as u32;
        let n_kv_heads = per_layer_max(g.get(&format!("{arch}.attention.head_count_kv")))
            .map_or(n_heads, |v| v as u32);
        let head_dim_k = g
            .arch_u64("attention.key_length")
            .map_or(hidden / n_heads.max(1), |v| v as u32);
        let head_dim_v = g
            .arch_u64("attention.value_length")
            .map_or(head_dim_k, |v| v as u32);
        let vocab = match g.get("tokenizer.ggml.tokens") {
            Some(Value::Array { len, .. }) => *len as u32,
            _ => g.arch_u64("vocab_size").unwrap_or(0) as u32,
        };
        let ffn = per_layer_max(g.get(&format!("{arch}.feed_forward_length"))).unwrap_or(0) as u32;
        let n_experts = g.arch_u64("expert_count").unwrap_or(0) as u32;
        let n_experts_active = g.arch_u64("expert_used_count").unwrap_or(0) as u32;
        let sliding_window = g.arch_u64("attention.sliding_window").map(|v| v as u32);
        let n_swa_layers = if sliding_window.is_some() {
            swa_layers(&arch, n_layers, g)
        } else {
            0
        };
        let tied_embeddings = !g.tensors.iter().any(|t| t.name == "output.weight");
        let params = g.parameter_count();
        let experts = g.tensors.iter().filter(|t| t.name.contains("_exps"));
        let expert_params: u64 = experts.clone().map(|t| t.elements()).sum();
        let expert_bytes: u64 = experts.map(|t| t.bytes()).sum();
        let params_active = if n_experts > 0 && n_experts_active > 0 {
            params - expert_params
                + expert_params * u64::from(n_experts_active) / u64::from(n_experts)
        } else {
            params
        };
        let tensor_bytes =
            |name: &str| g.tensors.iter().find(|t| t.name == name).map(|t| t.bytes());
        let lookup = g
            .tensors
            .iter()
            .find(|t| t.name == "token_embd.weight" && !tied_embeddings);
        Ok(ModelShape {
            id: id.to_string(),
            architecture: arch,
            n_layers,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim_k,
            head_dim_v,
            vocab,
            ffn,
            n_experts,
            n_experts_active,
            sliding_window,
            n_swa_layers,
            tied_embeddings,
            max_context: g.arch_u64("context_length").unwrap_or(0) as u32,
            params,
            params_active,
            expert_params,
            lookup_params: lookup.map_or(0, |t| t.elements()),
            weight_bytes: Some(g.weight_bytes()),
            expert_bytes: Some(expert_bytes),
            lookup_bytes: Some(lookup.map_or(0, |t| t.bytes())),
            embedding_bytes: tensor_bytes("token_embd.weight"),
            head_bytes: tensor_bytes("output.weight"),
            released_as: None,
            source: "GGUF header and tensor table".into(),
        })
    }
}
