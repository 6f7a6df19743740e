//! The decode-speed model of the llama.cpp engines (data in
//! `catalog/decode.toml`, each constant with its source).
//!
//! Time of one decode step = a fixed cost per step (kernel launches,
//! synchronisation, small ops: `per_layer_us` x layers, per device class
//! and llama.cpp generation) + for each tensor type, the bytes it reads /
//! (peak bandwidth x the class's memory share x the backend's kernel
//! efficiency for that type) + the KV cache read / (peak bandwidth x memory
//! share). Rules this module enforces:
//!
//! - every constant is data, never code; a class or generation without a
//!   constant of its own says which one it borrows ([`Constants::borrowed`]);
//! - a prediction names the llama.cpp generation it assumes (default: the
//!   one marked `default`, the newest);
//! - 16-bit kernels are the reference (efficiency 1.0): the memory share of
//!   a class is what its F16 matrix-vector kernels reach, and each quantized
//!   family reaches its own fraction of that.

use crate::hardware::Hardware;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

const DATA: &str = include_str!("../catalog/decode.toml");

/// A llama.cpp generation: a span of builds whose speed one set of
/// constants describes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    pub id: String,
    pub builds: String,
    #[serde(default)]
    pub default: bool,
    pub note: String,
}

/// A device class: a backend (cuda, metal, cpu) and a memory system.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    pub id: String,
    pub backend: String,
    /// Hardware profile ids in this class.
    #[serde(default)]
    pub hardware: Vec<String>,
    /// Share of peak bandwidth that 16-bit matrix-vector kernels reach.
    pub memory_share: f64,
    pub source: String,
}

/// The fixed per-step cost of one class in one generation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    pub class: String,
    pub generation: String,
    pub per_layer_us: f64,
    pub source: String,
}

/// Kernel efficiency of each tensor-type family on one backend in one
/// generation, relative to its 16-bit kernels.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Kernels {
    pub backend: String,
    pub generation: String,
    pub f16: f64,
    pub q8_0: f64,
    /// Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL.
    pub legacy: f64,
    /// The K-quants (Q2_K..Q6_K) and the other IQ types.
    pub kquant: f64,
    pub mxfp4: f64,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeCatalog {
    pub generation: Vec<Generation>,
    pub class: Vec<Class>,
    pub cost: Vec<Cost>,
    pub kernels: Vec<Kernels>,
}

static CATALOG: OnceLock<Result<DecodeCatalog, String>> = OnceLock::new();

/// The built-in decode model (parsed once).
pub fn catalog() -> Result<&'static DecodeCatalog, String> {
    CATALOG
        .get_or_init(|| {
            toml::from_str::<DecodeCatalog>(DATA).map_err(|e| format!("built-in decode model: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The tensor-type families whose kernels differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    F16,
    Q8_0,
    Legacy,
    KQuant,
    Mxfp4,
}

/// The family of a ggml type name (F32 and the 16-bit types read as F16).
pub fn family(ggml_type: &str) -> Family {
    match ggml_type.to_ascii_uppercase().as_str() {
        "F32" | "F16" | "BF16" => Family::F16,
        "Q8_0" | "Q8_1" => Family::Q8_0,
        "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1" | "IQ4_NL" => Family::Legacy,
        "MXFP4" => Family::Mxfp4,
        _ => Family::KQuant,
    }
}

impl Kernels {
    pub fn efficiency(&self, f: Family) -> f64 {
        match f {
            Family::F16 => self.f16,
            Family::Q8_0 => self.q8_0,
            Family::Legacy => self.legacy,
            Family::KQuant => self.kquant,
            Family::Mxfp4 => self.mxfp4,
        }
    }
}

/// Everything one prediction uses, resolved for a hardware profile and a
/// generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Constants {
    pub class: String,
    pub backend: String,
    pub generation: String,
    pub memory_share: f64,
    pub per_layer_s: f64,
    #[serde(skip)]
    pub kernels: Kernels,
    /// Where a constant came from another generation or class (no
    /// measurement of its own): said with the prediction.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub borrowed: Vec<String>,
}

impl DecodeCatalog {
    pub fn default_generation(&self) -> &str {
        self.generation
            .iter()
            .find(|g| g.default)
            .or(self.generation.last())
            .map(|g| g.id.as_str())
            .unwrap_or("current")
    }

    /// The class of a hardware profile: listed by id, else a unified
    /// machine without a GPU is `cpu` and anything else a consumer CUDA card.
    pub fn class_of(&self, hw: &Hardware) -> Option<&Class> {
        if let Some(f) = &hw.decode_fit {
            return self.class(&f.class);
        }
        self.class
            .iter()
            .find(|c| c.hardware.iter().any(|h| h == &hw.id))
            .or_else(|| {
                let id = if hw.id.starts_with("detected-cpu") {
                    "cpu"
                } else {
                    "cuda-consumer"
                };
                self.class.iter().find(|c| c.id == id)
            })
    }

    pub fn class(&self, id: &str) -> Option<&Class> {
        self.class.iter().find(|c| c.id == id)
    }

    /// Generations ordered as the file lists them (oldest first); the
    /// nearest one with a constant stands in for a missing one, older
    /// first (an older build is slower: the safer side).
    fn nearest<'a, T>(
        &self,
        generation: &str,
        have: impl Fn(&str) -> Option<&'a T>,
    ) -> Option<(&'a T, String)> {
        let order: Vec<&str> = self.generation.iter().map(|g| g.id.as_str()).collect();
        let at = order.iter().position(|g| *g == generation)?;
        if let Some(t) = have(order[at]) {
            return Some((t, order[at].to_string()));
        }
        let older = (0..at).rev().map(|i| order[i]);
        let newer = (at + 1..order.len()).map(|i| order[i]);
        older
            .chain(newer)
            .find_map(|g| have(g).map(|t| (t, g.to_string())))
    }

    /// The constants for `class` in `generation` (None: the default).
    pub fn constants_for_class(
        &self,
        class: &Class,
        generation: Option<&str>,
    ) -> Result<Constants, String> {
        let generation = generation.unwrap_or(self.default_generation());
        if !self.generation.iter().any(|g| g.id == generation) {
            let ids: Vec<&str> = self.generation.iter().map(|g| g.id.as_str()).collect();
            return Err(format!(
                "unknown llama.cpp generation `{generation}`; known: {}",
                ids.join(", ")
            ));
        }
        let mut borrowed = Vec::new();
        let (cost, from) = self
            .nearest(generation, |g| {
                self.cost
                    .iter()
                    .find(|c| c.class == class.id && c.generation == g)
            })
            .ok_or_else(|| format!("decode model: no fixed cost for class `{}`", class.id))?;
        if from != generation {
            borrowed.push(format!("fixed cost of {} from generation {from}", class.id));
        }
        let (kernels, from) = self
            .nearest(generation, |g| {
                self.kernels
                    .iter()
                    .find(|k| k.backend == class.backend && k.generation == g)
            })
            .ok_or_else(|| format!("decode model: no kernels for backend `{}`", class.backend))?;
        if from != generation {
            borrowed.push(format!(
                "{} kernel efficiencies from generation {from}",
                class.backend
            ));
        }
        Ok(Constants {
            class: class.id.clone(),
            backend: class.backend.clone(),
            generation: generation.to_string(),
            memory_share: class.memory_share,
            per_layer_s: cost.per_layer_us * 1e-6,
            kernels: kernels.clone(),
            borrowed,
        })
    }

    pub fn constants(&self, hw: &Hardware, generation: Option<&str>) -> Result<Constants, String> {
        let class = self
            .class_of(hw)
            .ok_or_else(|| format!("decode model: no class for `{}`", hw.id))?;
        let mut c = self.constants_for_class(class, generation)?;
        if let Some(f) = &hw.decode_fit {
            c.memory_share = f.memory_share;
            c.per_layer_s = f.per_layer_s;
            c.borrowed.push(format!(
                "memory share {:.2} and {:.1} us a layer fit to this machine ({})",
                f.memory_share,
                f.per_layer_s * 1e6,
                f.source
            ));
        }
        Ok(c)
    }
}

/// One decode step's time, by part.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct StepTime {
    /// Launches, synchronisation, small ops: layers x per-layer cost.
    pub fixed_s: f64,
    /// Weights read, each type at its kernel's efficiency.
    pub weights_s: f64,
    /// KV cache read.
    pub kv_s: f64,
}

impl StepTime {
    pub fn total(&self) -> f64 {
        self.fixed_s + self.weights_s + self.kv_s
    }
}

/// A step that reads `weights` (bytes by ggml type) and `kv_bytes` of KV
/// cache through `n_layers` layers, on a device of `peak_bandwidth_gbs`.
pub fn step_time(
    c: &Constants,
    peak_bandwidth_gbs: f64,
    n_layers: u32,
    weights: &[(&str, f64)],
    kv_bytes: f64,
) -> StepTime {
    let bw = peak_bandwidth_gbs * 1e9 * c.memory_share;
    let weights_s = weights
        .iter()
        .map(|(ty, bytes)| bytes / (bw * c.kernels.efficiency(family(ty)).max(1e-6)))
        .sum();
    StepTime {
        fixed_s: f64::from(n_layers) * c.per_layer_s,
        weights_s,
        kv_s: kv_bytes / bw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware;

    #[test]
    fn every_class_and_backend_resolves_in_every_generation() {
        let cat = catalog().unwrap();
        assert!(cat.generation.iter().filter(|g| g.default).count() == 1);
        for class in &cat.class {
            assert!(
                class.memory_share > 0.0 && class.memory_share <= 1.0,
                "{}",
                class.id
            );
            for g in &cat.generation {
                let c = cat.constants_for_class(class, Some(&g.id)).unwrap();
                assert!(c.per_layer_s >= 0.0 && c.per_layer_s < 1e-3, "{c:?}");
                for k in [
                    c.kernels.f16,
                    c.kernels.q8_0,
                    c.kernels.legacy,
                    c.kernels.kquant,
                    c.kernels.mxfp4,
                ] {
                    assert!(k > 0.0 && k <= 1.2, "{c:?}");
                }
            }
        }
        for h in hardware::profiles().unwrap() {
            assert!(
                cat.class.iter().any(|c| c.hardware.contains(&h.id)),
                "{} has no decode class",
                h.id
            );
        }
        let e = cat
            .constants(&hardware::find("gb10").unwrap(), Some("1999"))
            .unwrap_err();
        assert!(e.contains("1999"), "{e}");
    }

    #[test]
    fn families() {
        assert_eq!(family("BF16"), Family::F16);
        assert_eq!(family("Q4_0"), Family::Legacy);
        assert_eq!(family("Q6_K"), Family::KQuant);
        assert_eq!(family("IQ4_XS"), Family::KQuant);
        assert_eq!(family("MXFP4"), Family::Mxfp4);
    }
}
