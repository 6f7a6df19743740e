//! The built-in catalog (data in `catalog/models.toml`, not code): model
//! shapes from their published config.json, with the source of each.

use crate::shape::ModelShape;
use serde::Deserialize;

const CATALOG: &str = include_str!("../catalog/models.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub id: String,
    pub architecture: String,
    pub n_layers: u32,
    pub hidden: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub ffn: u32,
    pub vocab: u32,
    pub max_context: u32,
    #[serde(default)]
    pub tied_embeddings: bool,
    #[serde(default)]
    pub n_experts: u32,
    #[serde(default)]
    pub n_experts_active: u32,
    #[serde(default)]
    pub qkv_bias: bool,
    #[serde(default)]
    pub sliding_window: Option<u32>,
    #[serde(default)]
    pub n_swa_layers: u32,
    pub published_params: u64,
    pub source: String,
}

#[derive(Deserialize)]
struct File {
    model: Vec<CatalogEntry>,
}

/// Parameters of a decoder with gated (SwiGLU) MLPs, counted matrix by
/// matrix: embeddings, per layer q/k/v/o (+ biases), gate/up/down per
/// expert (+ router), two norms, the final norm and the output head.
pub fn count_params(e: &CatalogEntry) -> (u64, u64) {
    let h = u64::from(e.hidden);
    let q = u64::from(e.n_heads) * u64::from(e.head_dim);
    let kv = u64::from(e.n_kv_heads) * u64::from(e.head_dim);
    let experts = u64::from(e.n_experts.max(1));
    let active = if e.n_experts > 0 {
        u64::from(e.n_experts_active)
    } else {
        1
    };
    let attn = h * q + 2 * h * kv + q * h + if e.qkv_bias { q + 2 * kv } else { 0 };
    let mlp_one = 3 * h * u64::from(e.ffn);
    let router = if e.n_experts > 0 { h * experts } else { 0 };
    let layer = |n_mlp: u64| attn + n_mlp * mlp_one + router + 2 * h;
    let embed = u64::from(e.vocab) * h;
    let head = if e.tied_embeddings { 0 } else { embed };
    let n = u64::from(e.n_layers);
    (
        embed + n * layer(experts) + h + head,
        embed + n * layer(active) + h + head,
    )
}

pub fn entries() -> Result<Vec<CatalogEntry>, String> {
    toml::from_str::<File>(CATALOG)
        .map(|f| f.model)
        .map_err(|e| format!("built-in catalog: {e}"))
}

pub fn shape(e: &CatalogEntry) -> ModelShape {
    let (params, params_active) = count_params(e);
    ModelShape {
        id: e.id.clone(),
        architecture: e.architecture.clone(),
        n_layers: e.n_layers,
        hidden: e.hidden,
        n_heads: e.n_heads,
        n_kv_heads: e.n_kv_heads,
        head_dim_k: e.head_dim,
        head_dim_v: e.head_dim,
        vocab: e.vocab,
        ffn: e.ffn,
        n_experts: e.n_experts,
        n_experts_active: e.n_experts_active,
        sliding_window: e.sliding_window,
        n_swa_layers: e.n_swa_layers,
        tied_embeddings: e.tied_embeddings,
        max_context: e.max_context,
        params,
        params_active,
        weight_bytes: None,
        source: e.source.clone(),
    }
}

/// A catalog model by id (case-insensitive).
pub fn find(id: &str) -> Result<ModelShape, String> {
    let all = entries()?;
    all.iter()
        .find(|e| e.id.eq_ignore_ascii_case(id))
        .map(shape)
        .ok_or_else(|| {
            let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
            format!(
                "`{id}` is not in the catalog; known models: {}",
                ids.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_published_totals() {
        for e in entries().unwrap() {
            let (total, active) = count_params(&e);
            let err = (total as f64 - e.published_params as f64).abs() / e.published_params as f64;
            assert!(
                err < 0.005,
                "{}: {total} vs published {} ({:.3}%)",
                e.id,
                e.published_params,
                err * 100.0
            );
            assert!(active <= total);
        }
        // Mixtral uses 2 of 8 experts per token: about 12.9B active parameters.
        let m = find("mixtral-8x7b").unwrap();
        assert!(
            (12.8e9..13.0e9).contains(&(m.params_active as f64)),
            "{}",
            m.params_active
        );
    }

    #[test]
    fn kv_bytes_per_token_at_16_bit() {
        let kib = |id: &str| find(id).unwrap().kv_bytes_per_token(2.0) / 1024.0;
        assert_eq!(kib("llama-2-7b"), 512.0);
        assert_eq!(kib("llama-3.1-8b"), 128.0);
        assert_eq!(kib("llama-2-70b"), 320.0);
        assert_eq!(kib("qwen2.5-7b"), 56.0);
    }

    #[test]
    fn unknown_ids_list_the_catalog() {
        let e = find("gpt-9").unwrap_err();
        assert!(e.contains("llama-2-7b") && e.contains("gpt-9"), "{e}");
    }
}
