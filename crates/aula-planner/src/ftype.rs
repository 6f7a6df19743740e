//! llama.cpp's file types ("Q4_K_M", "Q2_K", ...): what `llama-quantize`
//! writes is not one ggml type for every tensor. The output head gets Q6_K,
//! and the `_M`/`_L` types give some layers' `attn_v` and `ffn_down` more
//! bits. Applying the same per-tensor rules to a model's shape gives the
//! size of the file it would make, for models known only by their shape
//! (catalog entries, config.json) — within 0.5% of published file sizes
//! (tests below).

use crate::ggml::GgmlType;
use crate::shape::ModelShape;

/// One llama.cpp file type: its name and the ggml type most tensors get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileType {
    pub name: &'static str,
    base: &'static str,
}

const FILE_TYPES: &[FileType] = &[
    FileType {
        name: "f16",
        base: "F16",
    },
    FileType {
        name: "bf16",
        base: "BF16",
    },
    FileType {
        name: "q8_0",
        base: "Q8_0",
    },
    FileType {
        name: "q6_k",
        base: "Q6_K",
    },
    FileType {
        name: "q5_k_m",
        base: "Q5_K",
    },
    FileType {
        name: "q5_k_s",
        base: "Q5_K",
    },
    FileType {
        name: "q5_1",
        base: "Q5_1",
    },
    FileType {
        name: "q5_0",
        base: "Q5_0",
    },
    FileType {
        name: "q4_k_m",
        base: "Q4_K",
    },
    FileType {
        name: "q4_k_s",
        base: "Q4_K",
    },
    FileType {
        name: "q4_1",
        base: "Q4_1",
    },
    FileType {
        name: "q4_0",
        base: "Q4_0",
    },
    FileType {
        name: "iq4_xs",
        base: "IQ4_XS",
    },
    FileType {
        name: "q3_k_l",
        base: "Q3_K",
    },
    FileType {
        name: "q3_k_m",
        base: "Q3_K",
    },
    FileType {
        name: "q3_k_s",
        base: "Q3_K",
    },
    FileType {
        name: "q2_k",
        base: "Q2_K",
    },
    FileType {
        name: "mxfp4",
        base: "MXFP4",
    },
];

impl FileType {
    /// A file type by name (case-insensitive); the bare K-quant names
    /// `q4_k`, `q5_k` and `q3_k` mean their `_M` type, as llama-quantize's
    /// own aliases do.
    pub fn parse(name: &str) -> Option<FileType> {
        let n = name.to_ascii_lowercase();
        let n = match n.as_str() {
            "q4_k" => "q4_k_m",
            "q5_k" => "q5_k_m",
            "q3_k" => "q3_k_m",
            "fp16" => "f16",
            other => other,
        };
        FILE_TYPES.iter().copied().find(|f| f.name == n)
    }

    fn base(&self) -> GgmlType {
        ggml(self.base)
    }

    /// The ggml type most tensors get ("Q4_K" for q4_k_m).
    pub fn base_type(&self) -> &'static str {
        self.base
    }

    /// Bits per weight of the type most tensors get.
    pub fn base_bits(&self) -> f64 {
        self.base().bits_per_weight()
    }
}

fn ggml(name: &str) -> GgmlType {
    // Every name used here is in ggml's table.
    GgmlType::from_name(name).unwrap_or(GgmlType {
        id: 1,
        name: "F16",
        block: 1,
        block_bytes: 2,
    })
}

/// The 2-D weight matrices of a decoder, as llama-quantize tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tensor {
    TokenEmbd,
    Output,
    AttnQ,
    AttnK,
    AttnV,
    AttnOut,
    FfnGate,
    FfnUp,
    FfnDown,
}

/// The layers llama.cpp gives more bits (about half of them): the first and
/// last eighth, and every third layer between.
fn use_more_bits(i: u32, n: u32) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The ggml type llama-quantize picks for one tensor of layer `i` of `n`.
fn tensor_type(ft: &FileType, t: Tensor, i: u32, shape: &ModelShape) -> GgmlType {
    let base = ft.base();
    let n = shape.n_layers;
    let name = ft.name;
    let gqa = shape.n_heads / shape.n_kv_heads.max(1);
    let eight_experts = shape.n_experts == 8;
    // Llama-architecture 80-layer models (Llama 2/3 70B): llama.cpp's
    // `LLM_TYPE_70B` rule.
    let is_70b = n == 80 && shape.architecture == "llama";
    let falcon = shape.architecture == "falcon";
    let pick = match (t, name) {
        (_, "f16" | "bf16" | "q8_0") => base,
        // Falcon's q, k and v are one fused `attn_qkv` tensor, with rules of
        // its own; its `ffn_down` and `attn_output` have theirs too.
        (Tensor::AttnQ | Tensor::AttnK | Tensor::AttnV, _) if falcon => match name {
            "q3_k_m" | "q3_k_l" => ggml("Q4_K"),
            "q4_k_m" => ggml("Q5_K"),
            "q5_k_m" => ggml("Q6_K"),
            _ => base,
        },
        (Tensor::FfnDown, "q3_k_m") if falcon => ggml(if i < n / 16 {
            "Q5_K"
        } else if use_more_bits(i, n) {
            "Q4_K"
        } else {
            "Q3_K"
        }),
        (Tensor::FfnDown, "q3_k_l") if falcon => ggml("Q4_K"),
        (Tensor::FfnDown, "q4_k_m") if falcon => ggml(if i < n / 16 {
            "Q6_K"
        } else if use_more_bits(i, n) {
            "Q5_K"
        } else {
            "Q4_K"
        }),
        (Tensor::AttnOut, _) if falcon => base,
        (_, "mxfp4") => {
            if shape.n_experts > 0 && matches!(t, Tensor::FfnGate | Tensor::FfnUp | Tensor::FfnDown)
            {
                base
            } else {
                ggml("Q8_0")
            }
        }
        // Falcon's output head stays at Q8_0 in llama-quantize.
        (Tensor::Output, _) if falcon => ggml("Q8_0"),
        (Tensor::Output, _) => ggml("Q6_K"),
        (Tensor::TokenEmbd, _) => base,
        (Tensor::AttnV, _) => {
            let v = match name {
                "q2_k" => ggml(if gqa >= 4 { "Q4_K" } else { "Q3_K" }),
                "q3_k_m" => ggml(if i < 2 { "Q5_K" } else { "Q4_K" }),
                "q3_k_l" => ggml("Q5_K"),
                "q4_k_m" | "q5_k_m" if use_more_bits(i, n) => ggml("Q6_K"),
                "q4_k_s" if i < 4 => ggml("Q5_K"),
                _ => base,
            };
            let v = if is_70b && (v.name == "Q3_K" || v.name == "Q4_K") {
                ggml("Q5_K")
            } else {
                v
            };
            if eight_experts { ggml("Q8_0") } else { v }
        }
        (Tensor::AttnK, _) if eight_experts => ggml("Q8_0"),
        (Tensor::FfnDown, _) => match name {
            "q2_k" => ggml("Q3_K"),
            "q3_k_m" if i < n / 16 => ggml("Q5_K"),
            "q3_k_m" if use_more_bits(i, n) => ggml("Q4_K"),
            "q3_k_l" => ggml("Q5_K"),
            "q4_k_m" | "q5_k_m" if use_more_bits(i, n) => ggml("Q6_K"),
            "q4_k_s" if i < n / 8 => ggml("Q5_K"),
            _ => base,
        },
        (Tensor::AttnOut, _) => match name {
            "q2_k" | "q3_k_s" | "q3_k_m" | "q4_k_s" | "q4_k_m" if eight_experts => ggml("Q5_K"),
            "q2_k" => ggml("Q3_K"),
            "q3_k_m" => ggml("Q4_K"),
            "q3_k_l" => ggml("Q5_K"),
            _ => base,
        },
        _ => base,
    };
    fallback(pick, row_length(t, shape))
}

/// Elements in one row (ggml's ne[0]) of each kind of matrix.
fn row_length(t: Tensor, shape: &ModelShape) -> u64 {
    match t {
        Tensor::AttnOut => u64::from(shape.n_heads) * u64::from(shape.head_dim_v),
        Tensor::FfnDown => u64::from(shape.ffn),
        _ => u64::from(shape.hidden),
    }
}

/// K-quants need rows that are whole 256-element blocks; llama-quantize
/// falls back to a 32-element type of about the same size otherwise.
fn fallback(t: GgmlType, row: u64) -> GgmlType {
    if t.block <= 32 || row.is_multiple_of(t.block) {
        return t;
    }
    match t.name {
        "Q4_K" => ggml("Q5_0"),
        "Q5_K" => ggml("Q5_1"),
        "Q6_K" => ggml("Q8_0"),
        _ => ggml("IQ4_NL"),
    }
}

/// Bytes of the weights a file of type `ft` would hold for `shape`:
/// (total, routed experts, lookup-only token embedding).
pub fn weight_bytes(shape: &ModelShape, ft: &FileType) -> (u64, u64, u64) {
    let b = bytes_by_type(shape, ft);
    (b.total(), b.experts(), b.lookup())
}

/// Where a tensor's bytes sit for decoding: read every step, read in part
/// (routed experts), or only looked up (one row per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Dense,
    Expert,
    Lookup,
}

/// A file's bytes split by ggml type and by [`Role`]: decode speed depends
/// on both (each type's kernel reaches its own share of bandwidth).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeBytes {
    /// (ggml type name, role, bytes), one entry per pair.
    pub parts: Vec<(&'static str, Role, u64)>,
}

impl TypeBytes {
    fn add(&mut self, ty: &'static str, role: Role, bytes: u64) {
        match self.parts.iter_mut().find(|p| p.0 == ty && p.1 == role) {
            Some(p) => p.2 += bytes,
            None => self.parts.push((ty, role, bytes)),
        }
    }
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.2).sum()
    }
    pub fn experts(&self) -> u64 {
        self.parts
            .iter()
            .filter(|p| p.1 == Role::Expert)
            .map(|p| p.2)
            .sum()
    }
    pub fn lookup(&self) -> u64 {
        self.parts
            .iter()
            .filter(|p| p.1 == Role::Lookup)
            .map(|p| p.2)
            .sum()
    }
}

/// [`weight_bytes`], tensor type by tensor type.
pub fn bytes_by_type(shape: &ModelShape, ft: &FileType) -> TypeBytes {
    let h = u64::from(shape.hidden);
    let q = u64::from(shape.n_heads) * u64::from(shape.head_dim_k);
    let kv_k = u64::from(shape.n_kv_heads) * u64::from(shape.head_dim_k);
    let kv_v = u64::from(shape.n_kv_heads) * u64::from(shape.head_dim_v);
    let o_in = u64::from(shape.n_heads) * u64::from(shape.head_dim_v);
    let embed = u64::from(shape.vocab) * h;
    let ffn = u64::from(shape.ffn);
    let n = u64::from(shape.n_layers);
    // A gated MLP (gate, up, down) unless the parameter total leaves room
    // only for a plain one (up, down).
    let heads = if shape.tied_embeddings { 1 } else { 2 };
    let gated_total = heads * embed + n * (h * q + h * kv_k + h * kv_v + o_in * h + 3 * h * ffn);
    let gated = shape.n_experts > 0 || gated_total <= shape.params + shape.params / 100;
    let mut out = TypeBytes::default();
    let mut matrices = 0u64;
    let mut add = |t: Tensor, i: u32, elements: u64, role: Role| {
        let ty = tensor_type(ft, t, i, shape);
        out.add(ty.name, role, ty.bytes_for(elements));
        matrices += elements;
    };
    // The token table is the output head too when they are tied (llama.cpp's
    // Falcon files carry a separate output head even then).
    let tied = shape.tied_embeddings && shape.architecture != "falcon";
    if tied {
        add(Tensor::Output, 0, embed, Role::Dense);
    } else {
        add(Tensor::TokenEmbd, 0, embed, Role::Lookup);
        add(Tensor::Output, 0, embed, Role::Dense);
    }
    // The MLP width per expert (or of the dense MLP): what the shape's
    // expert parameters say, else the gated/plain form from the FFN size.
    let per_layer_mlp = if shape.n_experts > 0 && shape.n_layers > 0 {
        shape.expert_params / u64::from(shape.n_layers)
    } else {
        0
    };
    let d = Role::Dense;
    for i in 0..shape.n_layers {
        add(Tensor::AttnQ, i, h * q, d);
        add(Tensor::AttnK, i, h * kv_k, d);
        add(Tensor::AttnV, i, h * kv_v, d);
        add(Tensor::AttnOut, i, o_in * h, d);
        if shape.n_experts > 0 {
            // gate, up and down of every expert, in equal thirds.
            let third = per_layer_mlp / 3;
            for t in [Tensor::FfnGate, Tensor::FfnUp, Tensor::FfnDown] {
                add(t, i, third, Role::Expert);
            }
        } else {
            if gated {
                add(Tensor::FfnGate, i, h * ffn, d);
            }
            add(Tensor::FfnUp, i, h * ffn, d);
            add(Tensor::FfnDown, i, ffn * h, d);
        }
    }
    // What is left (norms, biases, routers, attention sinks) is kept at F32
    // by llama-quantize: what the parameter total has beyond the matrices,
    // at 4 bytes each (never less than nothing).
    let rest = shape.params.saturating_sub(matrices);
    if rest > shape.params / 50 {
        // The shape is not the standard layout (a plain MLP, fused QKV):
        // the unmatched parameters are matrices at the base type.
        let base = ft.base();
        out.add(base.name, Role::Dense, base.bytes_for(rest));
    } else {
        out.add("F32", Role::Dense, rest * 4);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    /// Planned bytes of `id` as file type `ft` within 0.5% of `published`
    /// (in units of `unit` bytes).
    fn check(id: &str, ft: &str, published: f64, unit: f64) {
        let shape = catalog::find(id).unwrap();
        let (total, _, _) = weight_bytes(&shape, &FileType::parse(ft).unwrap());
        let got = total as f64 / unit;
        let err = (got - published) / published;
        assert!(
            err.abs() < 0.005,
            "{id} {ft}: {got:.2} planned, {published} published ({:+.2}%)",
            err * 100.0
        );
    }

    /// Published GGUF sizes (llama-bench's `size` column, GiB) against the
    /// file types' rules applied to the catalog shapes.
    #[test]
    fn sizes_of_published_files() {
        for (id, ft, published) in [
            // llama.cpp benches/dgx-spark.md (ggml-org GGUFs)
            ("qwen2.5-7b", "q8_0", 7.54),
            ("qwen3-30b-a3b", "q8_0", 30.25),
            ("gpt-oss-20b", "mxfp4", 11.27),
            ("gpt-oss-120b", "mxfp4", 59.02),
            // An Arc Pro B70 llama-bench table (llama.cpp build 9739) of
            // common Hugging Face GGUFs
            ("llama-3.1-8b", "q4_k_m", 4.58),
            ("llama-3.1-8b", "q5_k_m", 5.33),
            ("llama-3.1-8b", "q8_0", 7.95),
            ("llama-3.1-70b", "q4_k_m", 39.59),
            ("llama-3.1-70b", "q2_k", 24.56),
            ("gemma-3-12b", "q4_k_m", 6.79),
            ("gemma-3-27b", "q4_k_m", 15.40),
            ("qwen2.5-14b", "q4_k_m", 8.37),
            ("qwen3-30b-a3b", "q4_k_m", 17.35),
        ] {
            check(id, ft, published, 1024f64.powi(3));
        }
        // Hugging Face file listings (decimal GB, as the Hub shows them):
        // tensorblock/falcon-7b-GGUF, maddes8cht/tiiuae-falcon-40b, and
        // TheBloke/Falcon-180B-Chat-GGUF's Q8_0 (190,759,300,512 bytes, as
        // its downloader gave it in discussion #5).
        for (id, ft, published) in [
            ("falcon-7b", "q4_0", 4.21),
            ("falcon-7b", "q5_0", 5.08),
            ("falcon-7b", "q8_0", 7.67),
            ("falcon-40b", "q4_0", 23.8),
            ("falcon-40b", "q4_1", 26.4),
            ("falcon-40b", "q5_0", 29.0),
            ("falcon-40b", "q4_k_m", 25.5),
            ("falcon-40b", "q3_k_m", 20.1),
            ("falcon-180b", "q8_0", 190.759),
        ] {
            check(id, ft, published, 1e9);
        }
    }

    #[test]
    fn more_bits_for_some_layers() {
        let more: Vec<u32> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(more.len(), 16);
        assert!(more.contains(&0) && more.contains(&31) && more.contains(&6));
        assert!(!more.contains(&4));
    }

    #[test]
    fn names() {
        assert_eq!(FileType::parse("Q4_K").unwrap().name, "q4_k_m");
        assert_eq!(FileType::parse("q4_k_s").unwrap().name, "q4_k_s");
        assert!(FileType::parse("q9_x").is_none());
    }
}
