//! Layer offload in llama.cpp (`-ngl`, `n_gpu_layers`): how the buffers
//! that [`llamacpp::memory`] counts split between the GPU (the "device")
//! and host memory, whether a split fits a machine, and the most layers a
//! device budget holds. The rules, as the llama.cpp that Aula builds
//! (llama-cpp-sys-2 0.1.161) applies them:
//!
//! * layer slots (`llama-model.cpp`, `load_tensors`): the `n_layers`
//!   repeating layers and the output layer (final norm and head) are
//!   `n_layers + 1` slots, and `-ngl N` puts the last `N` on the device
//!   (`i_gpu_start = max(n_layer + 1 - N, 0)`, the output layer is slot
//!   `n_layer`). So the output layer goes first: `-ngl 1` offloads it
//!   alone, `-ngl N` it and the last `N - 1` repeating layers, and
//!   `N >= n_layers + 1` everything ([`NglOrder::OutputFirst`]). Older
//!   llama.cpp (`i_gpu_start = max(n_layer - N, 0)`, still in some
//!   llama-server builds) offloads the last `N` repeating layers and the
//!   output layer only when `N > n_layers` ([`NglOrder::OutputLast`]).
//! * input layer (`llama-model.cpp`: "there is very little benefit to
//!   offloading the input layer, so always keep it on the CPU"): the
//!   token-embedding table stays in host memory whatever `-ngl` is.
//! * tied embeddings (`llama-model-loader.cpp`, `create_tensor` with
//!   `TENSOR_DUPLICATED`): a model without `output.weight` uses the
//!   embedding table as its head, created in the output layer's buffer
//!   type. Where that is the input layer's (the output layer on the host)
//!   it is the same tensor; where the output layer is offloaded it is a
//!   second copy, on the device. Host memory holds the table once (assumed
//!   also without mmap).
//! * repeating layers: every weight but the embedding table and an untied
//!   head, split evenly, `(weights - embedding - head) / n_layers` a layer
//!   (assumed: one model's layers differ little; the output norm, rope
//!   tables and other small tensors are spread with them).
//! * KV cache (`llama-kv-cache.cpp`): each layer's K and V on its layer's
//!   device, `offload_kqv` being on (llama.cpp's default; Aula does not
//!   change it). Sliding-window layers are assumed spread evenly through
//!   the stack (Gemma's 5 local : 1 global, gpt-oss's alternation): the
//!   device's `k` layers include `n_swa_layers x k / n_layers` of them,
//!   rounded down.
//! * compute buffer (`llama-context.cpp`, `ggml_backend_sched` with
//!   `op_offload`, llama.cpp's default): the scheduler reserves the whole
//!   of [`llamacpp::memory`]'s compute figure on the GPU whatever `-ngl`
//!   is, because a large batch's matrix products run there even with
//!   their weights on the host (copied over one at a time); while the
//!   output layer is on the host, that includes room for the head, the
//!   largest weight. The host side keeps a buffer for the input layer's
//!   rows, taken as the activations' share of the compute figure (the
//!   figure less a micro-batch's logits). Checked on Vulkan (Mesa's
//!   lavapipe, SmolLM2 at -ngl 0, 15 and all: BENCHMARKS.md); CUDA's
//!   scheduler has the same rule (`offload_op` for batches of 32 and more).
//! * output buffer (`llama-context.cpp`, `output_reserve`): the output
//!   device's pinned host buffer type, host memory.
//!
//! Embedding and head bytes: a GGUF's tensor table (`token_embd.weight`,
//! `output.weight`: their own types, often not the layers' — a Q8_0 table
//! beside Q4 layers, a Q6_K head) where it is known; otherwise parameters
//! (`lookup_params`, or vocab x hidden) x the weights' average bits
//! (`weight_bytes x 8 / params`; 16 without a parameter count). A tied
//! head is the table's bytes.
//!
//! So, at every `-ngl`, `device + host = memory().total_bytes + duplicated`,
//! `duplicated` being the tied head's device copy, the compute buffer's
//! activations held on both sides, and the head's room in the device's
//! compute buffer while the output layer is on the host. A split describes
//! a GPU build with its GPU in use: `-ngl 0` there still puts the compute
//! buffer on the GPU (a CPU-only engine is [`llamacpp::memory`] alone).

use crate::hardware::Hardware;
use crate::llamacpp::{self, EngineSettings, LlamaCppMemory};
use crate::shape::ModelShape;
use serde::Serialize;

/// The rules, spelled out once (for `aula plan --explain`).
pub const RULES: &[(&str, &str)] = &[
    (
        "-ngl",
        "the n_layers repeating layers and the output layer are n_layers + 1 slots; -ngl N puts the last N on the GPU, the output layer first (llama.cpp as Aula builds it; older llama.cpp: the last N repeating layers, the output layer only when N > n_layers)",
    ),
    (
        "input layer",
        "the token-embedding table stays in host memory",
    ),
    (
        "tied head",
        "a model without output.weight reads the embedding table as its head: a second copy on the GPU when the output layer is offloaded, none otherwise",
    ),
    (
        "repeating layers",
        "(weights - embedding table - untied head) / n_layers each; embedding and head bytes: the GGUF's tensors where known, else vocab x hidden x the weights' average bits",
    ),
    (
        "KV cache",
        "each layer's on its layer's device (offload_kqv); sliding-window layers taken as spread evenly through the stack",
    ),
    (
        "compute buffer",
        "all of it on the GPU whatever -ngl is (op_offload runs large batches' matrix products there), plus room for the head while the output layer is on the host; the activations' share again on the host for the input rows",
    ),
    ("output buffer", "host memory (pinned)"),
    (
        "fits",
        "unified memory: GPU + host parts against the usable pool; a discrete GPU: the GPU part against its usable memory, the host part against free host memory when known",
    ),
];

/// Where `-ngl` starts counting the layer slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NglOrder {
    /// The output layer is offloaded first, then the repeating layers from
    /// the last (llama.cpp as Aula builds it: `i_gpu_start = max(n_layer +
    /// 1 - N, 0)`).
    #[default]
    OutputFirst,
    /// The repeating layers from the last, the output layer only when
    /// `N > n_layers` (older llama.cpp: `i_gpu_start = max(n_layer - N, 0)`).
    OutputLast,
}

impl NglOrder {
    /// (repeating layers on the device, output layer on the device) for
    /// `-ngl gpu_layers` on a model of `n_layers`.
    pub fn assign(self, n_layers: u32, gpu_layers: u32) -> (u32, bool) {
        match self {
            NglOrder::OutputFirst => (gpu_layers.saturating_sub(1).min(n_layers), gpu_layers >= 1),
            NglOrder::OutputLast => (gpu_layers.min(n_layers), gpu_layers > n_layers),
        }
    }
}

/// llama.cpp's buffers split between the device and host memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Offload {
    /// `-ngl` as asked (anything from `n_layers + 1` up means everything).
    pub gpu_layers: u32,
    pub order: NglOrder,
    pub n_layers: u32,
    /// Repeating layers on the device (the last ones).
    pub layers_on_device: u32,
    /// The output layer (final norm and head) on the device.
    pub output_on_device: bool,
    pub weights_device_bytes: u64,
    pub weights_host_bytes: u64,
    pub kv_device_bytes: u64,
    pub kv_host_bytes: u64,
    pub compute_device_bytes: u64,
    pub compute_host_bytes: u64,
    /// Always 0: llama.cpp keeps the output buffer in host memory.
    pub output_buffer_device_bytes: u64,
    pub output_buffer_host_bytes: u64,
    /// The token-embedding table (in `weights_host_bytes` always).
    pub embedding_bytes: u64,
    /// The output head: `output.weight`, or with tied embeddings the
    /// embedding table's copy (in `weights_device_bytes` when the output
    /// layer is offloaded).
    pub output_head_bytes: u64,
    /// Held twice: a tied head's device copy, and the compute buffer's
    /// activations while the repeating layers are split.
    pub duplicated_bytes: u64,
    pub device_bytes: u64,
    pub host_bytes: u64,
}

/// The token-embedding table's bytes and the output head's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ends {
    embedding: u64,
    /// The head's bytes (a tied head: the table's).
    head: u64,
    /// The head's bytes that are not also the table's (0 when tied).
    untied_head: u64,
}

/// Embedding and head bytes out of `weights` (see the module doc).
fn ends(shape: &ModelShape, weights: u64) -> Ends {
    let bits = if shape.params > 0 {
        weights as f64 * 8.0 / shape.params as f64
    } else {
        16.0
    };
    let at_bits = |params: u64| (params as f64 * bits / 8.0).round() as u64;
    let matrix = u64::from(shape.vocab) * u64::from(shape.hidden);
    let table_params = if shape.lookup_params > 0 {
        shape.lookup_params
    } else {
        matrix
    };
    let known = |b: Option<u64>| b.filter(|&b| b > 0);
    let embedding = known(shape.embedding_bytes)
        .or(known(shape.lookup_bytes))
        .unwrap_or_else(|| at_bits(table_params))
        .min(weights);
    if shape.tied_embeddings {
        Ends {
            embedding,
            head: embedding,
            untied_head: 0,
        }
    } else {
        let head = known(shape.head_bytes)
            .unwrap_or_else(|| at_bits(matrix))
            .min(weights - embedding);
        Ends {
            embedding,
            head,
            untied_head: head,
        }
    }
}

/// `total x k / n`, rounded down (0 when `n` is 0).
fn share(total: u64, k: u64, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    u64::try_from(u128::from(total) * u128::from(k) / u128::from(n)).unwrap_or(total)
}

fn when(cond: bool, bytes: u64) -> u64 {
    if cond { bytes } else { 0 }
}

/// The split at `-ngl gpu_layers` in the llama.cpp Aula builds (the output
/// layer offloaded first; see the module doc for every rule).
pub fn split(shape: &ModelShape, s: &EngineSettings, gpu_layers: u32) -> Offload {
    split_as(shape, s, gpu_layers, NglOrder::default())
}

/// [`split`] for a llama.cpp that counts `-ngl` in `order`.
pub fn split_as(
    shape: &ModelShape,
    s: &EngineSettings,
    gpu_layers: u32,
    order: NglOrder,
) -> Offload {
    let m = llamacpp::memory(shape, s);
    split_from(shape, s, &m, gpu_layers, order)
}

fn split_from(
    shape: &ModelShape,
    s: &EngineSettings,
    m: &LlamaCppMemory,
    gpu_layers: u32,
    order: NglOrder,
) -> Offload {
    let n = shape.n_layers;
    let (on_device, output_on_device) = order.assign(n, gpu_layers);
    let (k, n64) = (u64::from(on_device), u64::from(n));

    // Weights.
    let e = ends(shape, m.weights_bytes);
    let layers = m.weights_bytes.saturating_sub(e.embedding + e.untied_head);
    let layers_device = share(layers, k, n64);
    let weights_device = layers_device + when(output_on_device, e.head);
    let weights_host =
        e.embedding + when(!output_on_device, e.untied_head) + (layers - layers_device);
    let head_copy = when(output_on_device && shape.tied_embeddings, e.head);

    // KV cache: the device's k layers, sliding-window ones among them in
    // their share.
    let swa_device = share(u64::from(shape.n_swa_layers), k, n64).min(k);
    let kv_device = llamacpp::kv_bytes(
        shape,
        s,
        k - swa_device,
        swa_device,
        m.kv_cells_full,
        m.kv_cells_swa,
    )
    .min(m.kv_cache_bytes);
    let kv_host = m.kv_cache_bytes - kv_device;

    // Compute buffers: the whole one on the device whatever -ngl is
    // (op_offload runs a large batch's matrix products there), with room
    // for the head while the output layer is on the host (the largest
    // weight copied over); the activations' share again on the host, for
    // the input layer's rows.
    let logits = llamacpp::logits_bytes(shape, s).min(m.compute_buffer_bytes);
    let rest = m.compute_buffer_bytes - logits;
    let op_copy = when(!output_on_device, e.head);
    let compute_device = m.compute_buffer_bytes + op_copy;
    let compute_host = rest;

    let device_bytes = weights_device + kv_device + compute_device;
    let host_bytes = weights_host + kv_host + compute_host + m.output_buffer_bytes;
    Offload {
        gpu_layers,
        order,
        n_layers: n,
        layers_on_device: on_device,
        output_on_device,
        weights_device_bytes: weights_device,
        weights_host_bytes: weights_host,
        kv_device_bytes: kv_device,
        kv_host_bytes: kv_host,
        compute_device_bytes: compute_device,
        compute_host_bytes: compute_host,
        output_buffer_device_bytes: 0,
        output_buffer_host_bytes: m.output_buffer_bytes,
        embedding_bytes: e.embedding,
        output_head_bytes: e.head,
        duplicated_bytes: head_copy + rest + op_copy,
        device_bytes,
        host_bytes,
    }
}

/// Whether a split fits a machine. Buffers only: what an engine keeps
/// beside them (a CUDA context) is the caller's to add to the split or
/// take off the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Fit {
    pub fits: bool,
    /// The usable memory the device part goes to less what goes there: a
    /// discrete GPU's, less the device part; a unified pool, less device
    /// and host parts together. Negative: short by that much.
    pub device_left_bytes: i64,
    /// Free host memory less the host part: a discrete GPU's host, when
    /// its free memory is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_left_bytes: Option<i64>,
}

/// `have - need`, saturating at the ends of i64.
fn left(have: u64, need: u64) -> i64 {
    let d = i128::from(have) - i128::from(need);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

/// On unified memory one budget: device and host parts against the usable
/// pool (`host_free_bytes` is not used: it is the same memory). On a
/// discrete GPU the device part against the GPU's usable memory, and the
/// host part against `host_free_bytes` when given.
pub fn fits(o: &Offload, hw: &Hardware, host_free_bytes: Option<u64>) -> Fit {
    let usable = hw.usable_bytes();
    if hw.unified {
        let device_left = left(usable, o.device_bytes.saturating_add(o.host_bytes));
        return Fit {
            fits: device_left >= 0,
            device_left_bytes: device_left,
            host_left_bytes: None,
        };
    }
    let device_left = left(usable, o.device_bytes);
    let host_left = host_free_bytes.map(|free| left(free, o.host_bytes));
    Fit {
        fits: device_left >= 0 && host_left.is_none_or(|l| l >= 0),
        device_left_bytes: device_left,
        host_left_bytes: host_left,
    }
}

/// The largest `-ngl` (0 ..= n_layers + 1, the last meaning everything)
/// whose device part fits `device_budget_bytes`, in the llama.cpp Aula
/// builds (0 also when not even that fits: even `-ngl 0` needs the compute
/// buffer on the GPU).
pub fn most_layers_that_fit(
    shape: &ModelShape,
    s: &EngineSettings,
    device_budget_bytes: u64,
) -> u32 {
    most_layers_that_fit_as(shape, s, device_budget_bytes, NglOrder::default())
}

/// [`most_layers_that_fit`] for a llama.cpp that counts `-ngl` in `order`.
pub fn most_layers_that_fit_as(
    shape: &ModelShape,
    s: &EngineSettings,
    device_budget_bytes: u64,
    order: NglOrder,
) -> u32 {
    let m = llamacpp::memory(shape, s);
    (0..=shape.n_layers.saturating_add(1))
        .rev()
        .find(|&ngl| split_from(shape, s, &m, ngl, order).device_bytes <= device_budget_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware;

    const ORDERS: [NglOrder; 2] = [NglOrder::OutputFirst, NglOrder::OutputLast];

    /// Llama 3.1 8B as a Q4_K_M GGUF reads: untied, Q4_K embedding table.
    fn llama_8b() -> ModelShape {
        ModelShape {
            id: "llama-8b-like".into(),
            architecture: "llama".into(),
            n_layers: 32,
            hidden: 4096,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim_k: 128,
            head_dim_v: 128,
            vocab: 128_256,
            ffn: 14_336,
            n_experts: 0,
            n_experts_active: 0,
            sliding_window: None,
            n_swa_layers: 0,
            tied_embeddings: false,
            max_context: 131_072,
            params: 8_030_261_248,
            params_active: 8_030_261_248,
            expert_params: 0,
            lookup_params: 525_336_576,
            weight_bytes: Some(4_920_739_232),
            expert_bytes: Some(0),
            lookup_bytes: Some(295_501_824),
            embedding_bytes: None,
            head_bytes: None,
            released_as: None,
            source: "test".into(),
        }
    }

    /// Tied embeddings and Gemma 3's sliding-window layers.
    fn tied_swa() -> ModelShape {
        ModelShape {
            tied_embeddings: true,
            lookup_params: 0,
            lookup_bytes: Some(0),
            sliding_window: Some(1024),
            n_swa_layers: 27,
            ..llama_8b()
        }
    }

    /// No tensor table: weights from parameters.
    fn no_gguf() -> ModelShape {
        ModelShape {
            weight_bytes: None,
            expert_bytes: None,
            lookup_bytes: None,
            ..llama_8b()
        }
    }

    fn shapes() -> Vec<ModelShape> {
        vec![llama_8b(), tied_swa(), no_gguf()]
    }

    #[test]
    fn ngl_counts_slots_from_the_end() {
        let first = NglOrder::OutputFirst;
        assert_eq!(first.assign(32, 0), (0, false));
        assert_eq!(first.assign(32, 1), (0, true));
        assert_eq!(first.assign(32, 32), (31, true));
        assert_eq!(first.assign(32, 33), (32, true));
        assert_eq!(first.assign(32, 9999), (32, true));
        let last = NglOrder::OutputLast;
        assert_eq!(last.assign(32, 0), (0, false));
        assert_eq!(last.assign(32, 1), (1, false));
        assert_eq!(last.assign(32, 32), (32, false));
        assert_eq!(last.assign(32, 33), (32, true));
    }

    /// `-ngl 0` on a GPU build: weights and KV on the host, the compute
    /// buffer on the GPU with room for the head (op_offload).
    #[test]
    fn nothing_offloaded_still_computes_on_the_gpu() {
        let s = EngineSettings::default();
        for shape in shapes() {
            let m = llamacpp::memory(&shape, &s);
            let rest = m.compute_buffer_bytes - llamacpp::logits_bytes(&shape, &s);
            for order in ORDERS {
                let o = split_as(&shape, &s, 0, order);
                assert_eq!((o.layers_on_device, o.output_on_device), (0, false));
                assert_eq!((o.weights_device_bytes, o.kv_device_bytes), (0, 0), "{o:?}");
                assert_eq!(
                    o.compute_device_bytes,
                    m.compute_buffer_bytes + o.output_head_bytes
                );
                assert_eq!(o.compute_host_bytes, rest);
                assert_eq!(o.weights_host_bytes, m.weights_bytes);
                assert_eq!(o.duplicated_bytes, rest + o.output_head_bytes);
                assert_eq!(
                    o.device_bytes + o.host_bytes,
                    m.total_bytes + o.duplicated_bytes
                );
            }
        }
    }

    #[test]
    fn everything_offloaded_leaves_the_embedding_and_output_buffer() {
        let s = EngineSettings::default();
        for shape in shapes() {
            let m = llamacpp::memory(&shape, &s);
            let rest = m.compute_buffer_bytes - llamacpp::logits_bytes(&shape, &s);
            for order in ORDERS {
                for ngl in [33, 34, 9999] {
                    let o = split_as(&shape, &s, ngl, order);
                    assert_eq!((o.layers_on_device, o.output_on_device), (32, true));
                    assert_eq!(o.weights_host_bytes, o.embedding_bytes, "{o:?}");
                    assert_eq!((o.kv_host_bytes, o.compute_host_bytes), (0, rest));
                    assert_eq!(
                        o.host_bytes,
                        o.embedding_bytes + m.output_buffer_bytes + rest
                    );
                    assert_eq!(o.kv_device_bytes, m.kv_cache_bytes);
                    assert_eq!(o.compute_device_bytes, m.compute_buffer_bytes);
                    let copy = if shape.tied_embeddings {
                        o.output_head_bytes
                    } else {
                        0
                    };
                    assert_eq!(o.duplicated_bytes, copy + rest);
                    assert_eq!(o.device_bytes + o.host_bytes, m.total_bytes + copy + rest);
                }
            }
        }
        // The tied head's copy is the embedding table's size.
        let o = split(&tied_swa(), &s, 33);
        assert!(o.embedding_bytes > 0 && o.output_head_bytes == o.embedding_bytes);
        // An untied GGUF's table is its exact bytes.
        assert_eq!(split(&llama_8b(), &s, 33).embedding_bytes, 295_501_824);
        // A GGUF's own table and head bytes win over the average bits (a
        // Q8_0 table beside Q4 layers, a Q6_K head).
        let exact = ModelShape {
            embedding_bytes: Some(555_000_000),
            head_bytes: Some(444_000_000),
            ..llama_8b()
        };
        let o = split(&exact, &s, 33);
        assert_eq!(
            (o.embedding_bytes, o.output_head_bytes),
            (555_000_000, 444_000_000)
        );
        let tied = ModelShape {
            embedding_bytes: Some(555_000_000),
            ..tied_swa()
        };
        assert_eq!(split(&tied, &s, 33).output_head_bytes, 555_000_000);
    }

    #[test]
    fn half_the_layers_offloaded() {
        let s = EngineSettings::default();
        let shape = llama_8b();
        let m = llamacpp::memory(&shape, &s);
        let logits = llamacpp::logits_bytes(&shape, &s);
        let rest = m.compute_buffer_bytes - logits;
        // Aula's llama.cpp: -ngl 17 is the output layer and 16 layers.
        let o = split(&shape, &s, 17);
        assert_eq!((o.layers_on_device, o.output_on_device), (16, true));
        assert_eq!(o.kv_device_bytes * 2, m.kv_cache_bytes);
        assert_eq!(o.compute_device_bytes, m.compute_buffer_bytes);
        assert_eq!(o.compute_host_bytes, rest);
        assert_eq!(o.duplicated_bytes, rest);
        let layers = m.weights_bytes - o.embedding_bytes - o.output_head_bytes;
        assert_eq!(o.weights_device_bytes, layers / 2 + o.output_head_bytes);
        assert_eq!(
            o.weights_host_bytes,
            o.embedding_bytes + (layers - layers / 2)
        );
        // Older llama.cpp: -ngl 16 is 16 layers, the output layer stays.
        let o = split_as(&shape, &s, 16, NglOrder::OutputLast);
        assert_eq!((o.layers_on_device, o.output_on_device), (16, false));
        assert_eq!(o.kv_device_bytes * 2, m.kv_cache_bytes);
        assert_eq!(
            o.compute_device_bytes,
            m.compute_buffer_bytes + o.output_head_bytes
        );
        assert_eq!(o.compute_host_bytes, rest);
        assert_eq!(o.weights_device_bytes, layers / 2);
        assert!(o.device_bytes > 0 && o.host_bytes < m.total_bytes);
    }

    #[test]
    fn monotonic_and_summing_at_every_layer_count() {
        let s = EngineSettings::default();
        for shape in shapes() {
            let m = llamacpp::memory(&shape, &s);
            for order in ORDERS {
                let mut prev: Option<Offload> = None;
                for ngl in 0..=shape.n_layers + 3 {
                    let o = split_as(&shape, &s, ngl, order);
                    assert_eq!(
                        o.device_bytes,
                        o.weights_device_bytes
                            + o.kv_device_bytes
                            + o.compute_device_bytes
                            + o.output_buffer_device_bytes
                    );
                    assert_eq!(
                        o.host_bytes,
                        o.weights_host_bytes
                            + o.kv_host_bytes
                            + o.compute_host_bytes
                            + o.output_buffer_host_bytes
                    );
                    assert_eq!(
                        o.device_bytes + o.host_bytes,
                        m.total_bytes + o.duplicated_bytes,
                        "{} {order:?} ngl {ngl}",
                        shape.id
                    );
                    assert_eq!(o.kv_device_bytes + o.kv_host_bytes, m.kv_cache_bytes);
                    if let Some(p) = prev {
                        assert!(o.device_bytes >= p.device_bytes, "{order:?} ngl {ngl}");
                        assert!(o.host_bytes <= p.host_bytes, "{order:?} ngl {ngl}");
                        assert!(o.kv_device_bytes >= p.kv_device_bytes);
                        assert!(o.weights_device_bytes >= p.weights_device_bytes);
                    }
                    prev = Some(o);
                }
            }
        }
    }

    #[test]
    fn unified_memory_is_one_budget_a_discrete_gpu_two() {
        let s = EngineSettings::default();
        let o = split(&llama_8b(), &s, 17);
        assert!(o.device_bytes > 0 && o.host_bytes > 100_000_000);
        let mut gpu = hardware::find("rtx-4090").unwrap();
        assert!(!gpu.unified);
        gpu.usable_gb = (o.device_bytes + 100_000_000) as f64 / 1e9;
        let f = fits(&o, &gpu, None);
        assert!(f.fits, "{f:?}");
        assert!((f.device_left_bytes - 100_000_000).abs() < 1000, "{f:?}");
        assert_eq!(f.host_left_bytes, None);
        let f = fits(&o, &gpu, Some(o.host_bytes));
        assert!(f.fits && f.host_left_bytes == Some(0), "{f:?}");
        let f = fits(&o, &gpu, Some(o.host_bytes - 1));
        assert!(!f.fits && f.host_left_bytes == Some(-1), "{f:?}");
        // The same memory as one pool: the host part does not fit beside.
        let mut pool = gpu.clone();
        pool.unified = true;
        let f = fits(&o, &pool, Some(u64::MAX));
        assert!(!f.fits && f.host_left_bytes.is_none(), "{f:?}");
        assert!(f.device_left_bytes < 0);
        pool.usable_gb = (o.device_bytes + o.host_bytes + 100_000_000) as f64 / 1e9;
        assert!(fits(&o, &pool, None).fits);
        // The whole 8B on a real 24 GB card.
        let all = split(&llama_8b(), &s, 33);
        assert!(fits(&all, &hardware::find("rtx-4090").unwrap(), None).fits);
    }

    #[test]
    fn most_layers_that_fit_an_8b() {
        let s = EngineSettings::default();
        let shape = llama_8b();
        assert_eq!(most_layers_that_fit(&shape, &s, 0), 0);
        assert_eq!(most_layers_that_fit(&shape, &s, u64::MAX), 33);
        for order in ORDERS {
            for ngl in 0..=33 {
                let need = split_as(&shape, &s, ngl, order).device_bytes;
                let most = most_layers_that_fit_as(&shape, &s, need, order);
                // Where the head moves from the compute buffer's room into
                // the weights, the next -ngl needs as much (and fits too).
                assert!(most >= ngl, "{order:?} ngl {ngl}");
                assert_eq!(split_as(&shape, &s, most, order).device_bytes, need);
                if ngl > 0 {
                    assert!(
                        most_layers_that_fit_as(&shape, &s, need - 1, order) < ngl,
                        "{order:?} ngl {ngl}"
                    );
                }
            }
        }
        // 4 GB: the head, logits and activations (0.64 GB), then 16 layers
        // of 0.13 GB weights and 64 MiB of KV; older llama.cpp fits as
        // many: the head it leaves on the host still needs its room in the
        // GPU's compute buffer.
        assert_eq!(most_layers_that_fit(&shape, &s, 4_000_000_000), 17);
        assert_eq!(
            most_layers_that_fit_as(&shape, &s, 4_000_000_000, NglOrder::OutputLast),
            16
        );
    }
}
