//! Memory for one request on one profile: weights, KV cache, compute
//! buffers (llama.cpp's engines) or vLLM's budget and its figures.

use super::*;

/// Memory for the request on the hardware.
pub(super) fn memory(
    shape: &ModelShape,
    hw: &Hardware,
    r: &PlanRequest,
) -> (Memory, Option<VllmFigures>, u64) {
    let weights = weights(shape, &r.precision, r.engine).total;
    let kv_tok = if shape.architecture == "bert" {
        0.0
    } else {
        shape.kv_bytes_per_token(r.kv_bytes_per_elem)
    };
    let kv_seq = kv_per_sequence(shape, r.context, r.kv_bytes_per_elem);
    let usable = hw.usable_bytes();
    let gpu = hw.peak_tflops_16bit > 0.0 && !hw.id.starts_with("detected-cpu");
    if shape.architecture == "bert" {
        // An encoder keeps nothing between requests: weights plus the
        // activations of one batch of `users` inputs of `context` tokens.
        let activation = u64::from(r.users)
            * u64::from(r.context.min(shape.max_context.max(1)))
            * (4 * u64::from(shape.hidden) + u64::from(shape.ffn))
            * 4;
        let overhead = activation + if gpu { CUDA_CONTEXT } else { 0 };
        let total = weights + overhead;
        return (
            Memory {
                weights_bytes: weights,
                kv_bytes_per_token: 0.0,
                kv_bytes_per_sequence: 0,
                kv_cache_bytes: 0,
                overhead_bytes: overhead,
                total_bytes: total,
                usable_bytes: usable,
                left_bytes: usable as i64 - total as i64,
                llama_cpp: None,
            },
            None,
            u64::MAX,
        );
    }
    match r.engine {
        // A `url` model is never planned (see `EngineKind`).
        EngineKind::Embedded | EngineKind::LlamaServer | EngineKind::Url => {
            let mut s = shape.clone();
            s.weight_bytes = Some(weights);
            let lc = llamacpp::memory(
                &s,
                &EngineSettings {
                    context: r.context,
                    parallel: r.users,
                    n_ubatch: r.n_ubatch,
                    kv_bytes_per_elem: r.kv_bytes_per_elem,
                },
            );
            let overhead = lc.compute_buffer_bytes
                + lc.output_buffer_bytes
                + if gpu { CUDA_CONTEXT } else { 0 };
            let total = lc.weights_bytes + lc.kv_cache_bytes + overhead;
            let fixed = weights + overhead;
            let max_seq = if kv_seq > 0.0 {
                (usable.saturating_sub(fixed) as f64 / kv_seq).floor() as u64
            } else {
                u64::MAX
            };
            (
                Memory {
                    weights_bytes: weights,
                    kv_bytes_per_token: kv_tok,
                    kv_bytes_per_sequence: kv_seq.round() as u64,
                    kv_cache_bytes: lc.kv_cache_bytes,
                    overhead_bytes: overhead,
                    total_bytes: total,
                    usable_bytes: usable,
                    left_bytes: usable as i64 - total as i64,
                    llama_cpp: Some(lc),
                },
                None,
                max_seq,
            )
        }
        EngineKind::Vllm | EngineKind::Sglang => {
            // vLLM's fraction is of the device memory CUDA reports (usable_gb).
            let device = usable;
            let budget = (device as f64 * r.gpu_memory_utilization) as u64;
            let ffn = u64::from(shape.ffn) * u64::from(shape.n_experts_active.max(1));
            let v1 = r.engine_version == EngineVersion::V1;
            // V1 profiles one batch of max_num_batched_tokens (chunked
            // prefill is always on); V0 without chunked prefill must fit a
            // whole max_model_len prompt in one batch.
            let profiled = if v1 {
                r.max_num_batched_tokens
            } else {
                r.max_num_batched_tokens.max(r.context)
            };
            let activation = if r.engine == EngineKind::Vllm {
                u64::from(profiled) * (4 * u64::from(shape.hidden) + 2 * ffn) * 2
                    + u64::from(r.users) * u64::from(shape.vocab) * 4
            } else {
                0
            };
            let (non_torch, outside) = match (r.engine, v1) {
                (EngineKind::Vllm, true) => (VLLM_V1_NON_TORCH, VLLM_V1_CUDA_GRAPHS),
                _ => (VLLM_FIXED, 0),
            };
            let (draft_w, draft_kv) = match (&r.draft, r.engine) {
                (Some(d), EngineKind::Vllm) => (d.weights_bytes, d.kv_bytes_per_token),
                _ => (0, 0.0),
            };
            let kv_cache = budget as i64
                - weights as i64
                - draft_w as i64
                - activation as i64
                - non_torch as i64;
            // A block holds 16 tokens of every attention layer, the
            // draft's included.
            let block_bytes = (kv_tok + draft_kv) * VLLM_BLOCK as f64;
            let blocks = if kv_cache > 0 && block_bytes > 0.0 {
                (kv_cache as f64 / block_bytes).floor() as u64
            } else {
                0
            };
            let max_conc = (blocks * VLLM_BLOCK) as f64 / f64::from(r.context.max(1));
            // vLLM (and SGLang's static fraction) takes its whole budget up
            // front; V1's CUDA graphs come on top.
            let total = budget.max(weights + draft_w + activation + non_torch) + outside;
            let vllm = VllmFigures {
                budget_bytes: budget,
                activation_peak_bytes: activation,
                kv_cache_bytes: kv_cache,
                kv_blocks: blocks,
                max_concurrency: max_conc,
                engine_version: r.engine_version,
                profiled_tokens: profiled,
                non_torch_bytes: non_torch,
                outside_budget_bytes: outside,
                kv_tokens: blocks * VLLM_BLOCK,
                draft_weights_bytes: draft_w,
                draft_kv_bytes_per_token: draft_kv,
            };
            (
                Memory {
                    weights_bytes: weights,
                    kv_bytes_per_token: kv_tok,
                    kv_bytes_per_sequence: kv_seq.round() as u64,
                    kv_cache_bytes: kv_cache.max(0) as u64,
                    overhead_bytes: activation + non_torch + outside + draft_w,
                    total_bytes: total,
                    usable_bytes: usable,
                    left_bytes: usable as i64 - total as i64,
                    llama_cpp: None,
                },
                Some(vllm),
                max_conc.floor() as u64,
            )
        }
    }
}

/// The weights by ggml type and role, for the llama.cpp engines: the file
/// type's per-tensor rules, or (a GGUF, a size given) one type for all —
/// the file type's main type, else the one its bits per weight point to.
pub(super) fn typed_weights(shape: &ModelShape, p: &Precision, w: &Weights) -> TypeBytes {
    if let (None, Some(f)) = (shape.weight_bytes, p.file_type) {
        return crate::ftype::bytes_by_type(shape, &f);
    }
    let ty = match p.file_type {
        Some(f) if p.name != "gguf" => f.base_type(),
        _ => {
            let bits = w.total as f64 * 8.0 / shape.params.max(1) as f64;
            if bits >= 12.0 {
                "F16"
            } else if bits >= 7.5 {
                "Q8_0"
            } else {
                "Q4_K"
            }
        }
    };
    let dense = w.total.saturating_sub(w.experts + w.lookup);
    TypeBytes {
        parts: vec![
            (ty, Role::Dense, dense),
            (ty, Role::Expert, w.experts),
            (ty, Role::Lookup, w.lookup),
        ],
    }
}
