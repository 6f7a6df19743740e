//! A Hugging Face `config.json` (as vLLM and SGLang serve them) as a model
//! shape; with `model.safetensors.index.json` beside it, the exact
//! parameter count comes from its `metadata.total_size`.

use crate::catalog::{CatalogEntry, count_params};
use crate::shape::ModelShape;
use serde_json::Value;
use std::path::Path;

fn field(v: &Value, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| v.get(*n).and_then(Value::as_u64))
}

/// Parse the text of a config.json; `index` is the text of a
/// model.safetensors.index.json when there is one.
pub fn shape_from_config(
    id: &str,
    config: &str,
    index: Option<&str>,
) -> Result<ModelShape, String> {
    let v: Value =
        serde_json::from_str(config).map_err(|e| format!("config.json is not valid JSON: {e}"))?;
    let root = &v;
    // Multimodal wrappers keep the language model under text_config.
    let v = v.get("text_config").filter(|t| t.is_object()).unwrap_or(&v);
    let need = |names: &[&str]| -> Result<u64, String> {
        field(v, names).ok_or_else(|| format!("config.json has no `{}`", names[0]))
    };
    let n_layers = need(&["num_hidden_layers", "n_layer", "num_layers"])? as u32;
    let hidden = need(&["hidden_size", "n_embd", "d_model"])? as u32;
    let n_heads = need(&["num_attention_heads", "n_head"])? as u32;
    if n_heads == 0 {
        return Err("config.json: `num_attention_heads` is 0".into());
    }
    let n_kv_heads =
        field(v, &["num_key_value_heads", "num_kv_heads"]).map_or(n_heads, |x| x as u32);
    let head_dim = field(v, &["head_dim"]).map_or(hidden / n_heads, |x| x as u32);
    // Mixture-of-experts configs that also have dense layers give the
    // experts' width separately.
    let ffn = match field(v, &["moe_intermediate_size"]) {
        Some(w) if field(v, &["num_experts", "num_local_experts"]).unwrap_or(0) > 0 => w as u32,
        _ => need(&["intermediate_size", "ffn_dim", "n_inner"])? as u32,
    };
    let vocab = need(&["vocab_size"])? as u32;
    let model_type = v
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let entry = CatalogEntry {
        id: id.to_string(),
        architecture: model_type.clone(),
        n_layers,
        hidden,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn,
        vocab,
        max_context: field(v, &["max_position_embeddings", "n_positions"]).unwrap_or(0) as u32,
        tied_embeddings: v
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        n_experts: field(v, &["num_local_experts", "num_experts", "n_routed_experts"]).unwrap_or(0)
            as u32,
        n_experts_active: field(v, &["num_experts_per_tok"]).unwrap_or(0) as u32,
        qk_norm: model_type.starts_with("qwen3") || model_type.starts_with("gemma3"),
        qkv_bias: model_type == "qwen2"
            || v.get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        source: "config.json".into(),
        ..Default::default()
    };
    let entry = if matches!(model_type.as_str(), "bert" | "roberta" | "xlm-roberta") {
        let positions = entry.max_context;
        let types = field(v, &["type_vocab_size"]).unwrap_or(2) as u32;
        crate::catalog::bert_like(entry, positions, types)
    } else {
        entry
    };
    let mut shape = crate::catalog::shape(&entry);
    shape.released_as = root.get("quantization_config").and_then(released_precision);
    if let Some(index) = index {
        let iv: Value = serde_json::from_str(index)
            .map_err(|e| format!("model.safetensors.index.json is not valid JSON: {e}"))?;
        let total = iv["metadata"]["total_size"]
            .as_u64()
            .ok_or("model.safetensors.index.json has no metadata.total_size")?;
        // The root config (not text_config) says whether the checkpoint is
        // pre-quantized (AWQ, GPTQ, FP8, MXFP4, bitsandbytes...): then the
        // files' bytes are the weights vLLM loads, and the parameter count
        // stays the one counted from the shape.
        if root
            .get("quantization_config")
            .is_some_and(Value::is_object)
        {
            shape.weight_bytes = Some(total);
            shape.source =
                "config.json (pre-quantized: weights are the safetensors' total size)".into();
            return Ok(shape);
        }
        let bytes_per_param = match v
            .get("torch_dtype")
            .or(v.get("dtype"))
            .and_then(Value::as_str)
        {
            Some("float32") => 4,
            _ => 2,
        };
        let exact = total / bytes_per_param;
        let (counted, active) = count_params(&entry);
        shape.params_active = if counted > 0 {
            (active as f64 * exact as f64 / counted as f64).round() as u64
        } else {
            exact
        };
        if counted > 0 {
            shape.expert_params =
                (shape.expert_params as f64 * exact as f64 / counted as f64).round() as u64;
        }
        shape.params = exact;
        shape.source = "config.json + model.safetensors.index.json".into();
    }
    Ok(shape)
}

/// The precision a pre-quantized checkpoint's `quantization_config` names,
/// in `aula plan`'s words (vLLM/SGLang load it as it is).
fn released_precision(q: &Value) -> Option<String> {
    let method = q.get("quant_method").and_then(Value::as_str)?;
    let bits = q.get("bits").and_then(Value::as_u64);
    let flag = |k: &str| q.get(k).and_then(Value::as_bool).unwrap_or(false);
    let p = match method.to_ascii_lowercase().as_str() {
        "awq" | "gptq" | "compressed-tensors" if bits == Some(8) => "int8",
        "awq" | "gptq" => "int4",
        "fp8" | "fbgemm_fp8" => "fp8",
        "mxfp4" => "mxfp4",
        "modelopt" | "nvfp4" => "nvfp4",
        "bitsandbytes" if flag("load_in_4bit") => "nf4",
        "bitsandbytes" if flag("load_in_8bit") => "int8",
        _ => return None,
    };
    Some(p.to_string())
}

/// Read `config.json` (and its safetensors index, if present) from disk.
pub fn read(path: &Path) -> Result<ModelShape, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let index = path.with_file_name("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index).ok();
    let id = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    shape_from_config(&id, &text, index.as_deref()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA31_8B: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": false, "torch_dtype": "bfloat16"}"#;

    #[test]
    fn llama_config_matches_the_catalog() {
        let s = shape_from_config("x", LLAMA31_8B, None).unwrap();
        let c = crate::catalog::find("llama-3.1-8b").unwrap();
        assert_eq!(s.params, c.params);
        assert_eq!(s.kv_bytes_per_token(2.0), 131_072.0);
        let idx = r#"{"metadata": {"total_size": 16060522496}, "weight_map": {}}"#;
        let s = shape_from_config("x", LLAMA31_8B, Some(idx)).unwrap();
        assert_eq!(s.params, 8_030_261_248);
    }

    /// A pre-quantized checkpoint (here gpt-oss-20b's: MXFP4 experts, BF16
    /// rest) is planned at its files' size, not at total size / 2 params.
    #[test]
    fn pre_quantized_checkpoints_keep_their_bytes() {
        let cfg = r#"{"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
            "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_hidden_layers": 24,
            "num_local_experts": 32, "num_experts_per_tok": 4, "vocab_size": 201088,
            "torch_dtype": "bfloat16", "quantization_config": {"quant_method": "mxfp4"}}"#;
        let idx = r#"{"metadata": {"total_size": 13761264768}, "weight_map": {}}"#;
        let s = shape_from_config("gpt-oss-20b", cfg, Some(idx)).unwrap();
        assert_eq!(s.weight_bytes, Some(13_761_264_768));
        assert_eq!(s.released_as.as_deref(), Some("mxfp4"));
        assert!(s.params > 20_000_000_000, "{}", s.params);
        let p = crate::estimate::Precision::parse("bf16").unwrap();
        let w = crate::estimate::weights(&s, &p, crate::estimate::EngineKind::Vllm);
        assert_eq!(w.total, 13_761_264_768);
        // Without an index, the checkpoint's precision still says how big.
        let s = shape_from_config("gpt-oss-20b", cfg, None).unwrap();
        assert_eq!(s.weight_bytes, None);
        assert_eq!(s.released_as.as_deref(), Some("mxfp4"));
        let p = crate::estimate::Precision::parse("mxfp4").unwrap();
        let w = crate::estimate::weights(&s, &p, crate::estimate::EngineKind::Vllm);
        let gb = w.total as f64 / 1e9;
        assert!((12.5..15.0).contains(&gb), "{gb}");
    }

    #[test]
    fn missing_fields_and_bad_json_are_one_line_errors() {
        let e = shape_from_config("x", r#"{"hidden_size": 10}"#, None).unwrap_err();
        assert!(e.contains("num_hidden_layers"), "{e}");
        assert!(
            shape_from_config("x", "{", None)
                .unwrap_err()
                .contains("not valid JSON")
        );
        let e = shape_from_config("x", LLAMA31_8B, Some(r#"{"metadata": {}}"#)).unwrap_err();
        assert!(e.contains("total_size"), "{e}");
    }
}
