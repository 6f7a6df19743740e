//! Speed: the time of one decode step (memory- or compute-bound, llama.cpp's
//! structured model where it applies) and what follows from it per stream
//! and for all users.

use super::*;

/// The share of the routed experts that `batch` tokens touch: each token
/// picks k of E, so (1 - (1 - k/E)^batch) of them on average.
pub(super) fn expert_share(shape: &ModelShape, batch: u32) -> f64 {
    if shape.n_experts == 0 {
        return 1.0;
    }
    let k = f64::from(shape.n_experts_active);
    let e = f64::from(shape.n_experts);
    1.0 - (1.0 - k / e).powf(f64::from(batch))
}

/// The structured model's split of a llama.cpp step, and its constants.
pub type DecodeParts = (StepTime, Constants);

/// One decode step of `batch` sequences: seconds, whether compute bounds
/// it, and (llama.cpp engines) the structured model's parts of the
/// memory-side time.
pub fn decode_step(
    shape: &ModelShape,
    hw: &Hardware,
    r: &PlanRequest,
    batch: u32,
) -> Option<(f64, bool, Option<DecodeParts>)> {
    if hw.peak_bandwidth_gbs <= 0.0 || shape.architecture == "bert" {
        return None;
    }
    let w = weights(shape, &r.precision, r.engine);
    // A machine whose batched decode was measured (`aula assess`) bounds
    // the step by that rate, not by prefill's: small-batch matrix products
    // run far below large ones on a CPU.
    let flops = hw
        .decode_fit
        .as_ref()
        .and_then(|f| f.decode_tflops)
        .map(|t| t * 1e12)
        .unwrap_or_else(|| hw.achievable_flops(r.precision.eight_bit_compute));
    // Each sequence half full on average; sliding-window layers read at
    // most their window.
    let kv_half = kv_per_sequence(shape, r.context / 2, r.kv_bytes_per_elem);
    // Matrix products per token: the active parameters but a lookup table.
    let matmul_params = shape.params_active.saturating_sub(shape.lookup_params) as f64;
    let t_compute = if flops > 0.0 {
        2.0 * matmul_params * f64::from(batch) / flops
    } else {
        0.0
    };
    let kv = f64::from(batch) * kv_half;
    let llama_cpp = matches!(r.engine, EngineKind::Embedded | EngineKind::LlamaServer);
    let structured = llama_cpp
        .then(|| crate::decode::catalog().ok())
        .flatten()
        .and_then(|cat| cat.constants(hw, r.llama_cpp_generation.as_deref()).ok());
    let (t_mem, parts) = match structured {
        Some(c) => {
            let typed = typed_weights(shape, &r.precision, &w);
            let share = expert_share(shape, batch);
            let read: Vec<(&str, f64)> = typed
                .parts
                .iter()
                .map(|&(ty, role, bytes)| {
                    let b = bytes as f64;
                    let b = match role {
                        Role::Dense => b,
                        Role::Expert => b * share,
                        Role::Lookup => 0.0,
                    };
                    (ty, b)
                })
                .collect();
            let t = crate::decode::step_time(&c, hw.peak_bandwidth_gbs, shape.n_layers, &read, kv);
            (t.total(), Some((t, c)))
        }
        None => {
            let bw = match r.engine {
                EngineKind::Embedded | EngineKind::LlamaServer | EngineKind::Url => {
                    hw.achievable_bandwidth()
                }
                EngineKind::Vllm | EngineKind::Sglang => hw.achievable_bandwidth_vllm(),
            };
            ((w.read_per_step(shape, batch) + kv) / bw, None)
        }
    };
    Some((t_mem.max(t_compute), t_compute > t_mem, parts))
}

pub(super) fn speed(shape: &ModelShape, hw: &Hardware, r: &PlanRequest) -> Option<Speed> {
    let (t1, _, parts) = decode_step(shape, hw, r, 1)?;
    let users = r.users.max(1);
    let (tb, compute_bound, _) = decode_step(shape, hw, r, users)?;
    let flops = hw.achievable_flops(r.precision.eight_bit_compute);
    let matmul_params = shape.params_active.saturating_sub(shape.lookup_params) as f64;
    let prefill = if flops > 0.0 {
        flops / (2.0 * matmul_params)
    } else {
        0.0
    };
    let ttft = if prefill > 0.0 {
        f64::from(r.prompt_tokens) / prefill + t1
    } else {
        t1
    };
    let single = 1.0 / t1;
    let from = match &parts {
        Some((_, c)) => Some(c.class.clone()),
        None if r.engine == EngineKind::Vllm => Some("vllm".to_string()),
        None => None,
    };
    let single_stream_range = from.and_then(|from| {
        let s = crate::checks::spread(&from)?;
        // measured = predicted / (1 + error): the worst errors either way
        // bound it (0 always inside).
        Some(SpeedRange {
            low_tokens_per_s: single / (1.0 + s.max_error.max(0.0)),
            high_tokens_per_s: single / (1.0 + s.min_error.min(0.0)),
            from,
            checks: s.checks,
            within_25_percent: s.within_25,
        })
    });
    Some(Speed {
        single_stream_tokens_per_s: single,
        aggregate_tokens_per_s: f64::from(users) / tb,
        per_user_tokens_per_s: 1.0 / tb,
        decode_bound: if compute_bound {
            "compute"
        } else {
            "bandwidth"
        },
        prefill_tokens_per_s: prefill,
        time_to_first_token_s: ttft,
        single_stream_range,
        decode_model: parts.map(|(t, c)| DecodeDetail {
            llama_cpp_generation: c.generation,
            device_class: c.class,
            fixed_s: t.fixed_s,
            weights_s: t.weights_s,
            kv_s: t.kv_s,
            borrowed: c.borrowed,
        }),
        measured: None,
    })
}
