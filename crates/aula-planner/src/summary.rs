//! What `aula plan` found, as one value: printed as a table by
//! [`PlanSummary::to_text`], or as JSON (the same value serialised).

use crate::estimate::{Estimate, VerdictKind};
use crate::finetune::FineTune;
use crate::hardware::Hardware;
use crate::placement::Placement;
use serde::Serialize;
use std::fmt::Write as _;

/// Fine-tuning estimates of one model.
#[derive(Debug, Clone, Serialize)]
pub struct FinetunePlan {
    pub model: String,
    pub train_tokens: u32,
    pub lora_rank: u32,
    pub estimates: Vec<FineTune>,
    /// Aula's own trainer (adapters on q, k, v, o; micro-batch 1): its
    /// peak on a CUDA GPU, LoRA in bf16 and QLoRA in NF4 with gradient
    /// checkpointing, and on the CPU in f32 (`crate::finetune`'s
    /// `gpu_trainer_bytes` and `cpu_trainer_bytes`).
    pub aula_trainer: AulaTrainerPlan,
}

/// Aula's own trainer's peak memory for one model, by where it trains.
#[derive(Debug, Clone, Serialize)]
pub struct AulaTrainerPlan {
    pub gpu_lora_bf16_bytes: u64,
    /// QLoRA of a GGUF base: its bf16 copy at loading is the peak for big models.
    pub gpu_qlora_nf4_bytes: u64,
    /// QLoRA of a Hugging Face directory (a vLLM base): quantised while loading.
    pub gpu_qlora_nf4_hf_bytes: u64,
    pub cpu_lora_f32_bytes: u64,
}

impl AulaTrainerPlan {
    pub fn new(shape: &crate::shape::ModelShape, rank: u32, tokens: u32) -> AulaTrainerPlan {
        use crate::finetune::{cpu_trainer_bytes, gpu_trainer_bytes};
        AulaTrainerPlan {
            gpu_lora_bf16_bytes: gpu_trainer_bytes(shape, true, false, rank, 1, tokens),
            gpu_qlora_nf4_bytes: gpu_trainer_bytes(shape, true, true, rank, 1, tokens),
            gpu_qlora_nf4_hf_bytes: gpu_trainer_bytes(shape, false, true, rank, 1, tokens),
            cpu_lora_f32_bytes: cpu_trainer_bytes(shape, rank, 1, tokens),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanSummary {
    pub hardware: Hardware,
    pub estimates: Vec<Estimate>,
    /// Several models: do they fit together.
    pub placement: Option<Placement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune: Option<Vec<FinetunePlan>>,
    /// `--gpu-layers`: each model's split between GPU and host memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offload: Option<Vec<OffloadPlan>>,
    /// What was asked (shown in the text's heading).
    #[serde(skip)]
    pub engine: String,
    #[serde(skip)]
    pub context: u32,
    #[serde(skip)]
    pub users: u32,
}

impl PlanSummary {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let hw = &self.hardware;
        let gb = |b: u64| b as f64 / 1e9;
        let _ = writeln!(
            out,
            "{} — {:.1} GB usable, {:.0} GB/s peak ({}; efficiencies {})",
            hw.name, hw.usable_gb, hw.peak_bandwidth_gbs, hw.source, hw.efficiency_source
        );
        let _ = writeln!(
            out,
            "engine {}, {} tokens per request, {} at once\n",
            self.engine, self.context, self.users
        );
        let _ = writeln!(
            out,
            "{:<26} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>10} {:>7}",
            "model",
            "precision",
            "weights",
            "KV",
            "other",
            "total",
            "fits",
            "1 stream",
            "all users",
            "TTFT"
        );
        for e in &self.estimates {
            let m = &e.memory;
            let (one, all, ttft) = match &e.speed {
                Some(s) => (
                    format!("{:.1} t/s", s.single_stream_tokens_per_s),
                    format!("{:.0} t/s", s.aggregate_tokens_per_s),
                    format!("{:.2} s", s.time_to_first_token_s),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let fits = if e.max_sequences == u64::MAX {
                "any".to_string()
            } else {
                e.max_sequences.to_string()
            };
            let _ = writeln!(
                out,
                "{:<26} {:>9} {:>5.1} GB {:>5.1} GB {:>5.1} GB {:>5.1} GB {:>6} {:>9} {:>10} {:>7}",
                e.model,
                e.precision,
                gb(m.weights_bytes),
                gb(m.kv_cache_bytes),
                gb(m.overhead_bytes),
                gb(m.total_bytes),
                fits,
                one,
                all,
                ttft
            );
            if let Some(s) = &e.speed {
                if let Some(how) = &s.measured {
                    let _ = writeln!(out, "{:<26} speeds {how}", "");
                    continue;
                }
                let mut line = String::new();
                if let Some(r) = &s.single_stream_range {
                    let _ = write!(
                        line,
                        "1 stream {:.1} t/s, likely {:.0}-{:.0} t/s (the {} check rows' errors: {} of {} within 25%)",
                        s.single_stream_tokens_per_s,
                        r.low_tokens_per_s,
                        r.high_tokens_per_s,
                        r.from,
                        r.within_25_percent,
                        r.checks
                    );
                }
                if let Some(d) = &s.decode_model {
                    if !line.is_empty() {
                        line.push_str("; ");
                    }
                    let _ = write!(
                        line,
                        "llama.cpp {} generation, {}: fixed {:.1} ms + weights {:.1} ms + KV {:.1} ms per token",
                        d.llama_cpp_generation,
                        d.device_class,
                        d.fixed_s * 1e3,
                        d.weights_s * 1e3,
                        d.kv_s * 1e3
                    );
                    if !d.borrowed.is_empty() {
                        let _ = write!(line, " (borrowed: {})", d.borrowed.join("; "));
                    }
                }
                if s.single_stream_range.is_none() {
                    line.push_str(if line.is_empty() { "" } else { "; " });
                    line.push_str(
                        "no range: too few independent checks for this device and engine",
                    );
                }
                let _ = writeln!(out, "    speed: {line}");
            }
            let verdict = match e.verdict.kind {
                VerdictKind::Runs => "runs",
                VerdictKind::RunsWithQuantization => "runs with quantization",
                VerdictKind::NeedsOffload => "needs offload",
                VerdictKind::DoesNotFit => "does not fit",
            };
            let _ = writeln!(out, "    {verdict}: {}", e.verdict.reason);
            if let Some(v) = &e.vllm {
                let _ = writeln!(
                    out,
                    "    vLLM {:?}: budget {:.1} GB, activation peak {:.1} GB ({} tokens profiled), other {:.1} GB, KV cache {:.1} GB = {} blocks of 16 tokens ({} tokens), maximum concurrency {:.2}x at {} tokens",
                    v.engine_version,
                    gb(v.budget_bytes),
                    gb(v.activation_peak_bytes),
                    v.profiled_tokens,
                    gb(v.non_torch_bytes),
                    v.kv_cache_bytes as f64 / 1e9,
                    v.kv_blocks,
                    v.kv_tokens,
                    v.max_concurrency,
                    e.context
                );
                if v.outside_budget_bytes > 0 {
                    let _ = writeln!(
                        out,
                        "    plus {:.1} GB of CUDA graphs beyond the budget",
                        gb(v.outside_budget_bytes)
                    );
                }
                if v.draft_weights_bytes > 0 {
                    let _ = writeln!(
                        out,
                        "    draft: {:.1} GB of weights, {:.0} KiB of KV per token beside the target's",
                        gb(v.draft_weights_bytes),
                        v.draft_kv_bytes_per_token / 1024.0
                    );
                }
            }
        }
        if let Some(p) = &self.placement {
            let _ = writeln!(
                out,
                "\ntogether: {:.1} GB of {:.1} GB usable — {} (headroom {:.1} GB)",
                gb(p.total_bytes),
                gb(p.usable_bytes),
                if p.fits {
                    "they fit"
                } else {
                    "they do not fit"
                },
                p.headroom_bytes as f64 / 1e9
            );
            for m in &p.models {
                let _ = writeln!(
                    out,
                    "  {:<26} {:>6.1} GB  {}",
                    m.model,
                    gb(m.bytes),
                    m.command
                );
            }
            for f in &p.fix {
                let _ = writeln!(out, "  to make them fit: {f}");
            }
        }
        for o in self.offload.iter().flatten() {
            let sp = &o.split;
            let _ = writeln!(
                out,
                "\noffload of {} at -ngl {} ({} of {} layers{} on the GPU):",
                o.model,
                sp.gpu_layers,
                sp.layers_on_device,
                sp.n_layers,
                if sp.output_on_device {
                    " and the output layer"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                out,
                "  GPU memory  {:>7.2} GB (weights {:.2}, KV {:.2}, compute {:.2})",
                gb(sp.device_bytes),
                gb(sp.weights_device_bytes),
                gb(sp.kv_device_bytes),
                gb(sp.compute_device_bytes)
            );
            let _ = writeln!(
                out,
                "  host memory {:>7.2} GB (weights {:.2}, KV {:.2}, compute {:.2}, output {:.2})",
                gb(sp.host_bytes),
                gb(sp.weights_host_bytes),
                gb(sp.kv_host_bytes),
                gb(sp.compute_host_bytes),
                gb(sp.output_buffer_host_bytes)
            );
            let _ = writeln!(
                out,
                "  {} ({}{:.2} GB {}); the most -ngl that fits the GPU memory: {}",
                if o.fit.fits { "fits" } else { "does not fit" },
                if hw.unified {
                    "one unified pool: "
                } else {
                    "GPU memory: "
                },
                (o.fit.device_left_bytes.unsigned_abs()) as f64 / 1e9,
                if o.fit.device_left_bytes >= 0 {
                    "left"
                } else {
                    "short"
                },
                o.most_gpu_layers_that_fit
            );
        }
        for ft in self.finetune.iter().flatten() {
            {
                let _ = writeln!(
                    out,
                    "\nfine-tuning {} ({} tokens per sample, micro-batch 1, LoRA rank {}):",
                    ft.model, ft.train_tokens, ft.lora_rank
                );
                let _ = writeln!(
                    out,
                    "  {:<6} {:<13} {:>11} {:>9} {:>9} {:>9} {:>11} {:>9} {:>5} {:>19}",
                    "method",
                    "checkpointing",
                    "trainable",
                    "weights",
                    "grads",
                    "optimizer",
                    "activations",
                    "total",
                    "fits",
                    "hours / 10k samples"
                );
                for f in &ft.estimates {
                    let _ = writeln!(
                        out,
                        "  {:<6} {:<13} {:>10.1}M {:>6.1} GB {:>6.1} GB {:>6.1} GB {:>8.1} GB {:>6.1} GB {:>5} {:>19}",
                        format!("{:?}", f.method).to_lowercase(),
                        if f.gradient_checkpointing {
                            "yes"
                        } else {
                            "no"
                        },
                        f.trainable_params as f64 / 1e6,
                        gb(f.weights_bytes),
                        gb(f.gradients_bytes),
                        gb(f.optimizer_bytes),
                        gb(f.activations_bytes),
                        gb(f.total_bytes),
                        if f.fits { "yes" } else { "no" },
                        f.hours_per_10k_samples
                            .map(|h| format!("{h:.2}"))
                            .unwrap_or_else(|| "-".into())
                    );
                }
                let t = &ft.aula_trainer;
                let _ = writeln!(
                    out,
                    "  Aula's trainer (adapters on q, k, v, o): GPU LoRA bf16 {:.1} GB, GPU QLoRA NF4 {:.1} GB from a GGUF or {:.1} GB from Hugging Face weights (with checkpointing), CPU LoRA f32 {:.1} GB",
                    gb(t.gpu_lora_bf16_bytes),
                    gb(t.gpu_qlora_nf4_bytes),
                    gb(t.gpu_qlora_nf4_hf_bytes),
                    gb(t.cpu_lora_f32_bytes)
                );
            }
        }
        let _ = writeln!(
            out,
            "\n(`aula plan --explain` prints the formulas; llama.cpp speeds come from the decode model in catalog/decode.toml, vLLM and SGLang speeds from the efficiencies above; ranges from published checks, docs/planner-calibration.md)"
        );
        out
    }
}

/// One model's llama.cpp offload (`aula plan --gpu-layers`).
#[derive(Debug, Clone, Serialize)]
pub struct OffloadPlan {
    pub model: String,
    pub split: crate::offload::Offload,
    pub fit: crate::offload::Fit,
    /// The most `-ngl` that fits the GPU memory alone.
    pub most_gpu_layers_that_fit: u32,
}

/// `aula plan --explain`: every formula the estimates use.
pub fn formulas_text() -> String {
    let mut out = String::new();
    for (name, f) in crate::estimate::FORMULAS {
        let _ = writeln!(out, "{name}:\n    {f}");
    }
    for (name, f) in crate::offload::RULES {
        let _ = writeln!(out, "offload, {name}:\n    {f}");
    }
    out
}

/// `aula plan --list`: the catalog's models and the hardware profiles.
pub fn listing_text() -> Result<String, String> {
    let mut out = String::from("catalog models:\n");
    for e in crate::catalog::entries()? {
        let (p, _) = crate::catalog::count_params(&e);
        let _ = writeln!(
            out,
            "  {:<20} {:>8.2}B  {:<10} {}",
            e.id,
            p as f64 / 1e9,
            e.kind,
            e.source
        );
    }
    out.push_str("hardware profiles:\n");
    for h in crate::hardware::profiles()? {
        let _ = writeln!(
            out,
            "  {:<10} {:<34} {:>6.1} GB usable  {:>6.0} GB/s",
            h.id, h.name, h.usable_gb, h.peak_bandwidth_gbs
        );
    }
    Ok(out)
}
