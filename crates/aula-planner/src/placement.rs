//! Several models in one memory budget: do they fit together, with how much
//! headroom, with which engine settings each; and when they do not, the
//! cheapest change that makes them fit. A pure function: no I/O.

use crate::estimate::{
    EngineKind, Estimate, PlanRequest, Precision, VLLM_FIXED, estimate, kv_per_sequence,
};
use crate::hardware::Hardware;
use crate::shape::ModelShape;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Want {
    pub shape: ModelShape,
    pub request: PlanRequest,
}

#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    pub model: String,
    pub engine: EngineKind,
    /// What this model takes from the budget.
    pub bytes: u64,
    /// The engine's settings as decided here; `aula_fleet::launch` turns
    /// them into the engine's arguments (for `aula plan` and for the engine
    /// Aula starts alike).
    pub settings: Settings,
    /// The engine with those settings, as `aula plan` shows it ([`display_settings`]).
    pub command: String,
    pub estimate: Estimate,
}

/// What the plan decides for one engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Settings {
    /// Tokens per sequence.
    pub context: u32,
    /// Sequences at once.
    pub slots: u32,
    /// vLLM and SGLang: the share of the device they may take
    /// (`--gpu-memory-utilization`, `--mem-fraction-static`), in hundredths.
    pub share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Placement {
    pub fits: bool,
    pub total_bytes: u64,
    pub usable_bytes: u64,
    /// usable - total; negative when they do not fit.
    pub headroom_bytes: i64,
    pub models: Vec<Placed>,
    /// When they do not fit: the change(s) that make them fit, cheapest first found.
    pub fix: Vec<String>,
}

const GB: f64 = 1e9;

/// Bytes one model takes in a shared budget, and its engine settings. vLLM
/// and SGLang are given exactly what they need as their share of the device.
fn footprint(w: &Want, hw: &Hardware) -> (u64, Settings, Estimate) {
    let e = estimate(&w.shape, hw, &w.request);
    let r = &w.request;
    let mut settings = Settings {
        context: r.context,
        slots: r.users,
        share: None,
    };
    match r.engine {
        EngineKind::Embedded | EngineKind::LlamaServer | EngineKind::Url => {
            (e.memory.total_bytes, settings, e)
        }
        EngineKind::Vllm | EngineKind::Sglang => {
            let kv = kv_per_sequence(&w.shape, r.context, r.kv_bytes_per_elem) * f64::from(r.users);
            // Inside the budget: weights (a draft's too), the activation
            // peak, memory outside PyTorch, the KV cache; V1's CUDA graphs
            // come on top of it.
            let (inside, outside) = e
                .vllm
                .as_ref()
                .map(|v| {
                    (
                        v.activation_peak_bytes + v.non_torch_bytes + v.draft_weights_bytes,
                        v.outside_budget_bytes,
                    )
                })
                .unwrap_or((VLLM_FIXED, 0));
            let draft_kv = e
                .vllm
                .as_ref()
                .map(|v| v.draft_kv_bytes_per_token * f64::from(r.context) * f64::from(r.users))
                .unwrap_or(0.0);
            let need = e.memory.weights_bytes as f64 + inside as f64 + kv + draft_kv;
            let device = hw.usable_gb * GB;
            let share = if device > 0.0 {
                ((need / device) * 100.0).ceil() / 100.0
            } else {
                1.0
            };
            settings.share = Some(share);
            ((share * device) as u64 + outside, settings, e)
        }
    }
}

/// The one translation of the planner's settings into an engine's
/// arguments (`aula plan` prints them; `aula_fleet::launch` starts engines with them).
pub fn planned_args(engine: EngineKind, s: &Settings) -> Vec<String> {
    let share = format!("{:.2}", s.share.unwrap_or(1.0));
    let v = |x: &[&str]| x.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match engine {
        EngineKind::Embedded => vec![
            "--context".into(),
            s.context.to_string(),
            "--parallel".into(),
            s.slots.to_string(),
        ],
        EngineKind::LlamaServer => vec![
            "-c".into(),
            (u64::from(s.context) * u64::from(s.slots)).to_string(),
            "-np".into(),
            s.slots.to_string(),
            "-ngl".into(),
            "999".into(),
        ],
        EngineKind::Vllm => {
            let mut a = v(&["--max-model-len"]);
            a.push(s.context.to_string());
            a.push("--max-num-seqs".into());
            a.push(s.slots.to_string());
            a.push("--gpu-memory-utilization".into());
            a.push(share);
            a
        }
        EngineKind::Sglang => {
            let mut a = v(&["--context-length"]);
            a.push(s.context.to_string());
            a.push("--max-running-requests".into());
            a.push(s.slots.to_string());
            a.push("--mem-fraction-static".into());
            a.push(share);
            a
        }
        // Started elsewhere: no arguments of Aula's.
        EngineKind::Url => Vec::new(),
    }
}

/// How `aula plan` shows an engine's settings: the program and the planned
/// arguments Aula would start it with.
pub fn display_settings(engine: EngineKind, s: &Settings) -> String {
    let program = match engine {
        EngineKind::Embedded => "aula engine",
        EngineKind::LlamaServer => "llama-server",
        EngineKind::Vllm => "vllm serve",
        EngineKind::Sglang => "python3 -m sglang.launch_server",
        EngineKind::Url => "(a server run elsewhere)",
    };
    format!("{program} {}", planned_args(engine, s).join(" "))
}

fn total(wants: &[Want], hw: &Hardware) -> u64 {
    wants.iter().map(|w| footprint(w, hw).0).sum()
}

/// One step down the engine's quantization ladder from `p`, if there is one.
fn next_precision(p: &Precision, engine: EngineKind) -> Option<Precision> {
    crate::estimate::quantization_ladder(engine)
        .iter()
        .filter_map(|q| Precision::parse(q).ok())
        .find(|q| q.bits_per_weight < p.bits_per_weight - 0.1)
}

/// Every single change to one model, described.
fn candidates(wants: &[Want]) -> Vec<(String, Vec<Want>)> {
    let mut out = Vec::new();
    for (i, w) in wants.iter().enumerate() {
        let r = &w.request;
        if r.users > 1 {
            let mut c = wants.to_vec();
            c[i].request.users = r.users / 2;
            out.push((
                format!(
                    "serve {} to {} users at once instead of {}",
                    w.shape.id,
                    r.users / 2,
                    r.users
                ),
                c,
            ));
        }
        if r.context >= 2048 {
            let mut c = wants.to_vec();
            c[i].request.context = r.context / 2;
            out.push((
                format!(
                    "give {} a context of {} tokens instead of {}",
                    w.shape.id,
                    r.context / 2,
                    r.context
                ),
                c,
            ));
        }
        if let Some(p) = next_precision(&r.precision, r.engine) {
            let mut c = wants.to_vec();
            c[i].shape.weight_bytes = None;
            c[i].request.precision = p.clone();
            out.push((
                format!(
                    "quantize {} to {} (from {})",
                    w.shape.id, p.name, r.precision.name
                ),
                c,
            ));
        }
    }
    out
}

pub fn place(wants: &[Want], hw: &Hardware) -> Placement {
    let usable = hw.usable_bytes();
    let placed: Vec<Placed> = wants
        .iter()
        .map(|w| {
            let (bytes, settings, estimate) = footprint(w, hw);
            Placed {
                model: w.shape.id.clone(),
                engine: w.request.engine,
                bytes,
                settings,
                command: display_settings(w.request.engine, &settings),
                estimate,
            }
        })
        .collect();
    let sum: u64 = placed.iter().map(|p| p.bytes).sum();
    let fits = sum <= usable;
    let mut fix = Vec::new();
    if !fits {
        // The single change that fits while giving up the least memory.
        let best = candidates(wants)
            .into_iter()
            .map(|(d, c)| (total(&c, hw), d))
            .filter(|(t, _)| *t <= usable)
            .max_by_key(|(t, _)| *t);
        if let Some((_, d)) = best {
            fix.push(d);
        } else {
            // No single change is enough: take the one that frees the most, repeat.
            let mut current = wants.to_vec();
            for _ in 0..8 {
                let Some((t, d, c)) = candidates(&current)
                    .into_iter()
                    .map(|(d, c)| (total(&c, hw), d, c))
                    .min_by_key(|(t, _, _)| *t)
                else {
                    break;
                };
                fix.push(d);
                current = c;
                if t <= usable {
                    break;
                }
            }
            if total(&current, hw) > usable {
                fix.clear();
                fix.push("no combination of smaller contexts, fewer users and quantization down to 3 bits fits: serve fewer models".into());
            }
        }
    }
    Placement {
        fits,
        total_bytes: sum,
        usable_bytes: usable,
        headroom_bytes: usable as i64 - sum as i64,
        models: placed,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog, hardware};

    fn want(id: &str, engine: EngineKind, precision: &str, context: u32, users: u32) -> Want {
        Want {
            shape: catalog::find(id).unwrap(),
            request: PlanRequest {
                engine,
                precision: Precision::parse(precision).unwrap(),
                context,
                users,
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_guides_three_models_on_a_gb10() {
        // "7B + 13B + 70B-INT8 in about 110 GB".
        let hw = hardware::find("gb10").unwrap();
        let p = place(
            &[
                want("llama-2-7b", EngineKind::Embedded, "f16", 4096, 4),
                want("llama-2-13b", EngineKind::Embedded, "f16", 4096, 4),
                want("llama-2-70b", EngineKind::Embedded, "q8_0", 4096, 4),
            ],
            &hw,
        );
        // 13.5 + 26 + 73 GB of weights alone, plus 2 + 3.2 + 5.4 GB of KV: it does not fit.
        assert!(!p.fits, "{}", p.total_bytes);
        assert!(
            !p.fix.is_empty() && !p.fix[0].contains("fewer models"),
            "{:?}",
            p.fix
        );
        // With the 70B at 4 bits they do.
        let p = place(
            &[
                want("llama-2-7b", EngineKind::Embedded, "f16", 4096, 4),
                want("llama-2-13b", EngineKind::Embedded, "f16", 4096, 4),
                want("llama-2-70b", EngineKind::Embedded, "q4_k", 4096, 4),
            ],
            &hw,
        );
        assert!(p.fits, "{}", p.total_bytes);
        assert!(p.headroom_bytes > 0 && p.fix.is_empty());
        assert_eq!(
            p.models[2].settings,
            Settings {
                context: 4096,
                slots: 4,
                share: None
            }
        );
    }

    #[test]
    fn fits_with_headroom_and_settings() {
        let hw = hardware::find("h100-sxm").unwrap();
        let p = place(
            &[
                want("llama-3.1-8b", EngineKind::Vllm, "bf16", 8192, 16),
                want("qwen2.5-7b", EngineKind::Vllm, "bf16", 8192, 16),
            ],
            &hw,
        );
        assert!(p.fits && p.headroom_bytes > 0, "{p:?}");
        let s = p.models[0].settings;
        assert!(s.share.is_some_and(|x| x > 0.0 && x < 1.0), "{s:?}");
        assert_eq!((s.slots, s.context), (16, 8192));
        assert!(p.fix.is_empty());
    }

    #[test]
    fn hopeless_is_said_plainly() {
        let hw = hardware::find("rtx-3090").unwrap();
        let p = place(
            &[
                want("qwen2.5-72b", EngineKind::Embedded, "f16", 4096, 1),
                want("llama-2-70b", EngineKind::Embedded, "f16", 4096, 1),
            ],
            &hw,
        );
        assert!(!p.fits);
        assert!(p.fix[0].contains("serve fewer models"), "{:?}", p.fix);
    }
}
