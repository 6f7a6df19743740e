//! What `aula assess` measured on one machine, as data: the file it writes
//! (`$AULA_HOME/assessment.toml`) and the hardware profile the planner
//! makes of it (`aula plan --hardware this`), in place of a catalog
//! profile's assumptions. Measuring is the CLI's job; this is pure.

use crate::hardware::Hardware;
use serde::{Deserialize, Serialize};

/// One measured figure: the median of its repeats, their spread, and how
/// it was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
    pub method: String,
}

impl Figure {
    /// The figure of `samples` (at least one), measured by `method`.
    pub fn of(samples: &[f64], method: &str) -> Option<Figure> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Figure {
            median,
            min: s[0],
            max: s[n - 1],
            runs: n,
            method: method.to_string(),
        })
    }

    /// The spread, as a share of the median: (max - min) / median.
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median
        } else {
            0.0
        }
    }
}

/// The machine and what ran on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// When it was measured (`YYYY-MM-DD HH:MM UTC`).
    pub date: String,
    /// Aula's version and the build that measured.
    pub build: String,
    /// The backend llama.cpp ran on (the CPU variant, or the GPU's).
    pub backend: String,
    pub cores: usize,
    pub memory_gb: f64,
    pub usable_gb: f64,
    /// Memory bandwidth of a streaming read (GB/s).
    pub bandwidth_gbs: Option<Figure>,
    #[serde(default)]
    pub models: Vec<ModelFigures>,
}

/// One model as the embedded engine ran it here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFigures {
    pub name: String,
    pub file: String,
    /// Bytes of its weights, and its parameters (from the file).
    pub weight_bytes: u64,
    pub params: u64,
    pub context: u32,
    pub parallel: usize,
    /// From start to answering `/health`.
    pub load_s: Figure,
    /// What llama.cpp allocated (the engine's `/health`), and what the
    /// planner planned for the same context and slots.
    pub allocated_bytes: u64,
    pub planned_bytes: u64,
    /// Prompt tokens per second of one stream.
    pub prefill_tps: Figure,
    /// Generated tokens per second of one stream (after the first token).
    pub decode_tps_1: Figure,
    /// Generated tokens per second of all streams together, `parallel` at once.
    pub decode_tps_n: Figure,
}

impl ModelFigures {
    /// Bytes per second decoding one stream reads: the weights once a token.
    pub fn decode_bandwidth_gbs(&self) -> f64 {
        self.weight_bytes as f64 * self.decode_tps_1.median / 1e9
    }

    /// FLOP/s prefill reaches: 2 x parameters a prompt token.
    pub fn prefill_tflops(&self) -> f64 {
        2.0 * self.params as f64 * self.prefill_tps.median / 1e12
    }
}

impl Assessment {
    /// The hardware profile of the assessed machine: peak bandwidth the
    /// streaming read's, decode efficiency the largest share of it a model's
    /// decoding read, 16- and 8-bit FLOPS the best prefill's (reached, so
    /// compute efficiency 1). Without a bandwidth figure (or models) the
    /// speeds stay unknown (zero), as for an unassessed CPU.
    pub fn hardware(&self) -> Hardware {
        let bandwidth = self.bandwidth_gbs.as_ref().map_or(0.0, |f| f.median);
        let best = |f: fn(&ModelFigures) -> f64| self.models.iter().map(f).fold(0.0_f64, f64::max);
        let read = best(ModelFigures::decode_bandwidth_gbs);
        let tflops = best(ModelFigures::prefill_tflops);
        let efficiency = if bandwidth > 0.0 && read > 0.0 {
            (read / bandwidth).min(1.0)
        } else {
            0.75
        };
        let models: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        Hardware {
            id: "this".into(),
            name: format!(
                "this machine, assessed {} ({} cores, {:.1} GB, {})",
                self.date, self.cores, self.memory_gb, self.backend
            ),
            aliases: Vec::new(),
            memory_gb: self.memory_gb,
            usable_gb: self.usable_gb,
            unified: true,
            peak_bandwidth_gbs: bandwidth,
            peak_tflops_16bit: tflops,
            peak_tflops_8bit: tflops,
            decode_efficiency: efficiency,
            decode_efficiency_vllm: None,
            compute_efficiency: 1.0,
            source: format!(
                "aula assess ({}): streaming read {bandwidth:.1} GB/s; models {}",
                self.build,
                if models.is_empty() {
                    "none".into()
                } else {
                    models.join(", ")
                }
            ),
            efficiency_source: if read > 0.0 {
                format!("measured: decoding read {read:.1} GB/s, prefill {tflops:.3} TFLOPS")
            } else {
                "assumed (no model was measured)".into()
            },
        }
    }

    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }

    pub fn from_toml(text: &str) -> Result<Assessment, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fig(x: f64) -> Figure {
        Figure::of(&[x], "test").unwrap()
    }

    #[test]
    fn figures_are_medians_with_their_spread() {
        let f = Figure::of(&[3.0, 1.0, 2.0, f64::NAN], "m").unwrap();
        assert_eq!((f.median, f.min, f.max, f.runs), (2.0, 1.0, 3.0, 3));
        assert!((f.spread() - 1.0).abs() < 1e-9);
        assert_eq!(Figure::of(&[1.0, 3.0], "m").unwrap().median, 2.0);
        assert!(Figure::of(&[], "m").is_none());
    }

    #[test]
    fn the_profile_reads_the_measurements_and_round_trips() {
        let a = Assessment {
            date: "2026-12-06 20:00 UTC".into(),
            build: "aula 0.1.0".into(),
            backend: "cpu".into(),
            cores: 2,
            memory_gb: 24.0,
            usable_gb: 20.0,
            bandwidth_gbs: Some(fig(20.0)),
            models: vec![ModelFigures {
                name: "m".into(),
                file: "m.gguf".into(),
                weight_bytes: 100_000_000,
                params: 135_000_000,
                context: 1024,
                parallel: 4,
                load_s: fig(1.0),
                allocated_bytes: 200_000_000,
                planned_bytes: 210_000_000,
                prefill_tps: fig(1000.0),
                decode_tps_1: fig(100.0),
                decode_tps_n: fig(250.0),
            }],
        };
        let hw = a.hardware();
        assert_eq!(hw.peak_bandwidth_gbs, 20.0);
        // 100 MB a token at 100 tokens/s: 10 GB/s, half the streaming read.
        assert!((hw.decode_efficiency - 0.5).abs() < 1e-9);
        assert!((hw.peak_tflops_16bit - 0.27).abs() < 1e-9);
        assert_eq!(Assessment::from_toml(&a.to_toml().unwrap()).unwrap(), a);
        let none = Assessment {
            models: Vec::new(),
            bandwidth_gbs: None,
            ..a
        };
        assert_eq!(none.hardware().peak_bandwidth_gbs, 0.0);
    }
}
