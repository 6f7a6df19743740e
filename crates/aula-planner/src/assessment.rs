//! What `aula assess` measured on one machine, as data: the file it writes
//! (`$AULA_HOME/assessment.toml`) and the hardware profile the planner
//! makes of it (`aula plan --hardware this`), in place of a catalog
//! profile's assumptions. Measuring is the CLI's job; this is pure.

use crate::hardware::{DecodeFit, Hardware};
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
    /// The decode model's constants fit to the models' single-stream steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_fit: Option<DecodeFit>,
}

/// One model's single-stream step for the fit: its layers, the time its
/// reads take at the full streaming bandwidth, and the step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPoint {
    pub n_layers: u32,
    pub read_s: f64,
    pub measured_s: f64,
}

/// Fit `measured = layers x per_layer + read / share` to the points: with
/// two or more (least squares over both unknowns), else (or where that
/// gives a cost below zero or a share outside (0, 1]) the share alone with
/// `default_per_layer_s`, averaged over the points. None without points.
pub fn fit_decode(points: &[StepPoint], default_per_layer_s: f64) -> Option<(f64, f64)> {
    let ok = |(share, per): (f64, f64)| share > 0.0 && share <= 1.0 && per >= 0.0;
    if points.len() >= 2 {
        // Unknowns p (per layer) and u = 1 / share: normal equations.
        let (mut a11, mut a12, mut a22, mut b1, mut b2) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for q in points {
            let l = f64::from(q.n_layers);
            a11 += l * l;
            a12 += l * q.read_s;
            a22 += q.read_s * q.read_s;
            b1 += l * q.measured_s;
            b2 += q.read_s * q.measured_s;
        }
        let det = a11 * a22 - a12 * a12;
        if det.abs() > f64::EPSILON * a11 * a22 {
            let p = (b1 * a22 - b2 * a12) / det;
            let u = (a11 * b2 - a12 * b1) / det;
            if u > 0.0 && ok((1.0 / u, p)) {
                return Some((1.0 / u, p));
            }
        }
    }
    let shares: Vec<f64> = points
        .iter()
        .filter_map(|q| {
            let left = q.measured_s - f64::from(q.n_layers) * default_per_layer_s;
            (left > 0.0).then(|| (q.read_s / left).min(1.0))
        })
        .collect();
    (!shares.is_empty()).then(|| {
        let share = shares.iter().sum::<f64>() / shares.len() as f64;
        (share, default_per_layer_s)
    })
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
    /// `speed` (of this model, `users` at once, `prompt_tokens` of prompt)
    /// replaced by what was measured: one stream and prefill as measured,
    /// `users` streams from the steps at 1 and `parallel` streams (straight
    /// between and beyond them, as [`crate::class`] steps).
    pub fn apply(&self, speed: &mut crate::estimate::Speed, users: u32, prompt_tokens: u32) {
        let Some(engine) = crate::class::Engine::measured(self, users) else {
            return;
        };
        let users = users.max(1);
        let step = engine.step_s(users);
        speed.single_stream_tokens_per_s = self.decode_tps_1.median;
        speed.aggregate_tokens_per_s = f64::from(users) / step;
        speed.per_user_tokens_per_s = 1.0 / step;
        speed.prefill_tokens_per_s = self.prefill_tps.median;
        speed.time_to_first_token_s =
            f64::from(prompt_tokens) / self.prefill_tps.median + 1.0 / self.decode_tps_1.median;
        speed.single_stream_range = None;
        speed.measured = Some(engine.source);
    }

    /// Bytes per second decoding one stream reads: the weights once a token.
    pub fn decode_bandwidth_gbs(&self) -> f64 {
        self.weight_bytes as f64 * self.decode_tps_1.median / 1e9
    }

    /// FLOP/s prefill reaches: 2 x parameters a prompt token.
    pub fn prefill_tflops(&self) -> f64 {
        2.0 * self.params as f64 * self.prefill_tps.median / 1e12
    }
}

/// The FLOPS batched decode reached: for each model measured at `n`
/// streams, 2 x its matrix-product parameters x n over the step at n
/// (`n / aggregate tokens per second`), averaged. None without such a
/// measurement.
pub fn decode_tflops(points: &[(u64, usize, f64)]) -> Option<f64> {
    let rates: Vec<f64> = points
        .iter()
        .filter(|(params, n, tps)| *params > 0 && *n > 1 && *tps > 0.0)
        .map(|&(params, n, tps)| {
            let step = n as f64 / tps;
            2.0 * params as f64 * n as f64 / step / 1e12
        })
        .collect();
    (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
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
            decode_fit: self.decode_fit.clone().or_else(|| self.cpu_class()),
        }
    }

    /// A CPU machine with no fit: the CPU class's own (assumed) constants,
    /// so that it is never planned as a GPU.
    fn cpu_class(&self) -> Option<DecodeFit> {
        if !self.backend.starts_with("cpu") {
            return None;
        }
        let cat = crate::decode::catalog().ok()?;
        let c = cat.constants_for_class(cat.class("cpu")?, None).ok()?;
        Some(DecodeFit {
            class: "cpu".into(),
            memory_share: c.memory_share,
            per_layer_s: c.per_layer_s,
            decode_tflops: None,
            source: "the cpu class's assumed constants (no model was measured)".into(),
        })
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
    fn two_models_fit_both_constants_and_one_the_share() {
        // Steps made with a share of 0.5 and 20 us a layer.
        let point = |n_layers: u32, read_s: f64| StepPoint {
            n_layers,
            read_s,
            measured_s: f64::from(n_layers) * 20e-6 + read_s / 0.5,
        };
        let (share, per) = fit_decode(&[point(30, 0.004), point(18, 0.007)], 50e-6).unwrap();
        assert!(
            (share - 0.5).abs() < 1e-6 && (per - 20e-6).abs() < 1e-9,
            "{share} {per}"
        );
        // One model: the share, with the cost given.
        let (share, per) = fit_decode(&[point(30, 0.004)], 20e-6).unwrap();
        assert!((share - 0.5).abs() < 1e-6 && per == 20e-6);
        // Points no share explains fall back; none at all fit nothing.
        let odd = [
            point(30, 0.004),
            StepPoint {
                n_layers: 18,
                read_s: 0.007,
                measured_s: 0.001,
            },
        ];
        assert!(fit_decode(&odd, 20e-6).is_some_and(|(s, p)| s > 0.0 && s <= 1.0 && p == 20e-6));
        assert!(fit_decode(&[], 20e-6).is_none());
    }

    #[test]
    fn batched_decode_flops_come_from_the_aggregate_steps() {
        // 100M parameters, 4 streams at 200 tok/s: a step of 20 ms doing
        // 2 x 100M x 4 FLOP = 0.04 TFLOPS.
        let f = decode_tflops(&[(100_000_000, 4, 200.0)]).unwrap();
        assert!((f - 0.04).abs() < 1e-12, "{f}");
        assert!(decode_tflops(&[(100_000_000, 1, 200.0)]).is_none());
        assert!(decode_tflops(&[]).is_none());
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
            decode_fit: None,
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
