//! Hardware profiles (data in `catalog/hardware.toml`). The planner takes a
//! machine as data: detecting the one it runs on (the OS, NVML) is
//! `aula_fleet::host`'s job, not the planner's.

use serde::{Deserialize, Serialize};

const PROFILES: &str = include_str!("../catalog/hardware.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Installed memory (GPU memory, or the unified pool).
    pub memory_gb: f64,
    /// What models may use: the unified pool less what the OS keeps, or the
    /// GPU's memory less what the driver reserves.
    pub usable_gb: f64,
    pub unified: bool,
    pub peak_bandwidth_gbs: f64,
    pub peak_tflops_16bit: f64,
    pub peak_tflops_8bit: f64,
    /// Share of peak bandwidth that decoding reaches (llama.cpp).
    pub decode_efficiency: f64,
    /// The same for vLLM and SGLang where a measurement says it differs;
    /// otherwise `decode_efficiency`.
    #[serde(default)]
    pub decode_efficiency_vllm: Option<f64>,
    /// Share of peak 16-bit FLOPS that prefill reaches.
    pub compute_efficiency: f64,
    pub source: String,
    /// Where the efficiencies come from: a citation, or `assumed`.
    pub efficiency_source: String,
    /// The llama.cpp decode model's constants fit to this machine by
    /// `aula assess` (none for a catalog profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_fit: Option<DecodeFit>,
}

/// A machine's own decode constants, measured: its class (whose kernel
/// efficiencies still apply), the share of the bandwidth decoding reaches
/// and the fixed cost per layer of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeFit {
    pub class: String,
    pub memory_share: f64,
    pub per_layer_s: f64,
    /// The FLOPS batched decode reaches (from the measured steps at several
    /// streams), which bounds a batched step in place of prefill's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tflops: Option<f64>,
    pub source: String,
}

impl Hardware {
    pub fn usable_bytes(&self) -> u64 {
        (self.usable_gb * 1e9) as u64
    }
    /// Bytes per second decoding actually reads (llama.cpp engines).
    pub fn achievable_bandwidth(&self) -> f64 {
        self.peak_bandwidth_gbs * 1e9 * self.decode_efficiency
    }
    /// Bytes per second decoding reads in vLLM or SGLang.
    pub fn achievable_bandwidth_vllm(&self) -> f64 {
        self.peak_bandwidth_gbs
            * 1e9
            * self
                .decode_efficiency_vllm
                .unwrap_or(self.decode_efficiency)
    }
    /// FLOP/s prefill actually reaches at 16-bit (8-bit weights: the 8-bit rate).
    pub fn achievable_flops(&self, eight_bit: bool) -> f64 {
        let peak = if eight_bit {
            self.peak_tflops_8bit
        } else {
            self.peak_tflops_16bit
        };
        peak * 1e12 * self.compute_efficiency
    }
}

#[derive(Deserialize)]
struct File {
    hardware: Vec<Hardware>,
}

pub fn profiles() -> Result<Vec<Hardware>, String> {
    toml::from_str::<File>(PROFILES)
        .map(|f| f.hardware)
        .map_err(|e| format!("built-in hardware profiles: {e}"))
}

/// A profile by id or alias (case-insensitive).
pub fn find(name: &str) -> Result<Hardware, String> {
    let all = profiles()?;
    let n = name.to_ascii_lowercase();
    all.iter()
        .find(|h| h.id == n || h.aliases.contains(&n))
        .cloned()
        .ok_or_else(|| {
            let ids: Vec<&str> = all.iter().map(|h| h.id.as_str()).collect();
            format!(
                "unknown hardware `{name}`; known: {} (or --detect)",
                ids.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_load_and_resolve() {
        let all = profiles().unwrap();
        assert!(all.len() >= 12);
        let spark = find("DGX-Spark").unwrap();
        assert_eq!(spark.id, "gb10");
        assert_eq!(spark.peak_bandwidth_gbs, 273.0);
        assert!(spark.unified && (spark.usable_gb - 119.6).abs() < 1e-9);
        for h in &all {
            assert!(h.usable_gb <= h.memory_gb, "{}", h.id);
            assert!(h.decode_efficiency > 0.0 && h.decode_efficiency <= 1.0);
        }
        let e = find("tpu-v9").unwrap_err();
        assert!(e.contains("gb10") && e.contains("tpu-v9"), "{e}");
    }
}
