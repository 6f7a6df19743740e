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
    /// `decoder` (generates text) or `embedding` (an encoder).
    #[serde(default = "decoder")]
    pub kind: String,
    /// `gated` (SwiGLU/GeGLU: gate, up, down) or `plain` (up, down).
    #[serde(default = "gated")]
    pub mlp: String,
    #[serde(default)]
    pub attn_out_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub router_bias: bool,
    /// One learned attention-sink logit per head and layer (gpt-oss).
    #[serde(default)]
    pub attn_sinks: bool,
    /// RMSNorm of q and k per head (Gemma 3, Qwen 3).
    #[serde(default)]
    pub qk_norm: bool,
    #[serde(default = "two")]
    pub norms_per_layer: u32,
    /// LayerNorm with a bias (BERT, Falcon) rather than RMSNorm.
    #[serde(default)]
    pub norm_bias: bool,
    /// Learned absolute positions (BERT), and token-type embeddings.
    #[serde(default)]
    pub position_embeddings: u32,
    #[serde(default)]
    pub type_vocab: u32,
    #[serde(default)]
    pub embedding_norm: bool,
    #[serde(default = "yes")]
    pub final_norm: bool,
    /// BERT's pooler (a dense layer over the first token).
    #[serde(default)]
    pub pooler: bool,
    #[serde(default)]
    pub sliding_window: Option<u32>,
    #[serde(default)]
    pub n_swa_layers: u32,
    /// The precision the weights were released in, when it is not 16-bit
    /// (gpt-oss: MXFP4 experts); reports plan the model at it.
    #[serde(default)]
    pub released_as: Option<String>,
    pub published_params: u64,
    pub source: String,
}

impl Default for CatalogEntry {
    fn default() -> Self {
        CatalogEntry {
            id: String::new(),
            architecture: String::new(),
            n_layers: 0,
            hidden: 0,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            ffn: 0,
            vocab: 0,
            max_context: 0,
            tied_embeddings: false,
            n_experts: 0,
            n_experts_active: 0,
            qkv_bias: false,
            kind: decoder(),
            mlp: gated(),
            attn_out_bias: false,
            mlp_bias: false,
            router_bias: false,
            attn_sinks: false,
            qk_norm: false,
            norms_per_layer: 2,
            norm_bias: false,
            position_embeddings: 0,
            type_vocab: 0,
            embedding_norm: false,
            final_norm: true,
            pooler: false,
            sliding_window: None,
            n_swa_layers: 0,
            released_as: None,
            published_params: 0,
            source: String::new(),
        }
    }
}

/// BERT-style encoders (embedding models) as the catalog describes them.
pub fn bert_like(mut e: CatalogEntry, max_positions: u32, type_vocab: u32) -> CatalogEntry {
    e.kind = "embedding".into();
    e.architecture = "bert".into();
    e.mlp = "plain".into();
    e.tied_embeddings = true;
    e.qkv_bias = true;
    e.attn_out_bias = true;
    e.mlp_bias = true;
    e.norm_bias = true;
    e.position_embeddings = max_positions;
    e.type_vocab = type_vocab;
    e.embedding_norm = true;
    e.final_norm = false;
    e.pooler = true;
    e
}

fn decoder() -> String {
    "decoder".into()
}
fn gated() -> String {
    "gated".into()
}
fn two() -> u32 {
    2
}
fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct File {
    model: Vec<CatalogEntry>,
}

/// Parameters counted matrix by matrix: embeddings (tokens, positions,
/// token types, their norm), per layer q/k/v/o with their biases and sinks,
/// the MLP of each expert (gated: gate, up, down; plain: up, down) with
/// biases, the router, the norms; the final norm, the output head unless tied,
/// and BERT's pooler. Returns (total, active per token).
pub fn count_params(e: &CatalogEntry) -> (u64, u64) {
    let c = count(e);
    (c.total, c.active)
}

/// Parameter counts of a catalog entry.
pub struct Counts {
    pub total: u64,
    pub active: u64,
    /// All routed experts' MLPs (0 for a dense model).
    pub experts: u64,
    /// A token-embedding table that is not also the output head.
    pub lookup: u64,
}

pub fn count(e: &CatalogEntry) -> Counts {
    let h = u64::from(e.hidden);
    let hd = u64::from(e.head_dim);
    let q = u64::from(e.n_heads) * hd;
    let kv = u64::from(e.n_kv_heads) * hd;
    let experts = u64::from(e.n_experts.max(1));
    let active = if e.n_experts > 0 {
        u64::from(e.n_experts_active)
    } else {
        1
    };
    let norm = |width: u64| if e.norm_bias { 2 * width } else { width };
    let attn = h * q
        + 2 * h * kv
        + q * h
        + if e.qkv_bias { q + 2 * kv } else { 0 }
        + if e.attn_out_bias { h } else { 0 }
        + if e.attn_sinks {
            u64::from(e.n_heads)
        } else {
            0
        }
        + if e.qk_norm { 2 * hd } else { 0 };
    let ffn = u64::from(e.ffn);
    let gated = e.mlp != "plain";
    let mlp_one = if gated { 3 * h * ffn } else { 2 * h * ffn }
        + if e.mlp_bias {
            if gated { 2 * ffn + h } else { ffn + h }
        } else {
            0
        };
    let router = if e.n_experts > 0 {
        h * experts + if e.router_bias { experts } else { 0 }
    } else {
        0
    };
    let layer =
        |n_mlp: u64| attn + n_mlp * mlp_one + router + u64::from(e.norms_per_layer) * norm(h);
    let embed = (u64::from(e.vocab) + u64::from(e.position_embeddings) + u64::from(e.type_vocab))
        * h
        + if e.embedding_norm { norm(h) } else { 0 };
    let head = if e.tied_embeddings {
        0
    } else {
        u64::from(e.vocab) * h
    };
    let tail = if e.final_norm { norm(h) } else { 0 } + if e.pooler { h * h + h } else { 0 };
    let n = u64::from(e.n_layers);
    Counts {
        total: embed + n * layer(experts) + tail + head,
        active: embed + n * layer(active) + tail + head,
        experts: if e.n_experts > 0 {
            n * experts * mlp_one
        } else {
            0
        },
        lookup: if e.tied_embeddings || e.kind == "embedding" {
            0
        } else {
            u64::from(e.vocab) * h
        },
    }
}

pub fn entries() -> Result<Vec<CatalogEntry>, String> {
    toml::from_str::<File>(CATALOG)
        .map(|f| f.model)
        .map_err(|e| format!("built-in catalog: {e}"))
}

pub fn shape(e: &CatalogEntry) -> ModelShape {
    let c = count(e);
    let (params, params_active) = (c.total, c.active);
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
        expert_params: c.experts,
        lookup_params: c.lookup,
        weight_bytes: None,
        expert_bytes: None,
        lookup_bytes: None,
        embedding_bytes: None,
        head_bytes: None,
        released_as: e.released_as.clone(),
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
        // Entries whose exact total could not be read are checked against
        // published GGUF file sizes instead (ftype::tests::sizes_of_published_files).
        const SIZE_CHECKED: &[&str] = &["falcon-40b", "falcon-180b"];
        for e in entries().unwrap() {
            if e.published_params == 0 {
                assert!(SIZE_CHECKED.contains(&e.id.as_str()), "{}: no check", e.id);
                continue;
            }
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
