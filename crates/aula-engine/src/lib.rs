//! `aula engine`: one GGUF model in its own process, served over the OpenAI
//! HTTP API with llama.cpp (through `llama-cpp-2`) and continuous batching.
//!
//! * [`scheduler`] — the batching loop on the llama.cpp context;
//! * [`embed`] — the batching loop of embedding models;
//! * [`server`] — HTTP handlers;
//! * [`template`] — chat templates (minijinja);
//! * [`output`] — UTF-8 assembly and stop sequences;
//! * [`memory`] — what llama.cpp allocated, for `/health`;
//! * [`cpu`] — which CPU kernels llama.cpp runs, chosen at run time;
//! * `load` — a model and its context, adapters, an embedding model.

pub mod cl100k;
pub mod constraint;
pub mod cpu;
pub mod devices;
pub mod embed;
pub mod memory;
pub mod output;
pub mod scheduler;
pub mod server;
pub use aula_protocol::template;

use anyhow::{Context, anyhow, bail};
use axum::serve::ListenerExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use std::future::Future;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
mod load;
pub use load::*;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model: PathBuf,
    /// The name clients use in `model`; defaults to the file stem.
    pub name: Option<String>,
    /// Sequences decoded together (slots).
    pub parallel: usize,
    /// Tokens each sequence may use, prompt and completion together.
    pub context: Option<u32>,
    pub threads: Option<usize>,
    /// Requests that may wait for a slot before new ones get 503.
    pub queue: usize,
    /// Most tokens in one decode step (generation tokens plus prefill chunks).
    pub batch: usize,
    /// Echo llama.cpp's own log to stderr.
    pub verbose: bool,
    /// When set, every request must carry `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Pool token states into one vector this way instead of the model's own
    /// (`{arch}.pooling_type`); given for a model without one, it makes the
    /// model an embedding model (as llama-server's `--embeddings --pooling`).
    pub pooling: Option<Pooling>,
    /// Layers to offload to the GPU [default: all when a GPU device is
    /// present, else none].
    pub gpu_layers: Option<devices::GpuLayers>,
    /// Devices to use, by llama.cpp's names (`CUDA0`, `Vulkan0`) [default: every GPU].
    pub devices: Vec<String>,
    /// Flash attention: `on`, `off` or `auto` [default: auto].
    pub flash_attn: Option<FlashAttn>,
    /// KV cache element types [default: f16].
    pub cache_type_k: Option<KvType>,
    pub cache_type_v: Option<KvType>,
    /// LoRA adapters (GGUF) applied to every sequence, with their scales.
    pub lora: Vec<(PathBuf, f32)>,
    /// A directory of LoRA adapters (`NAME.gguf`), each served as the model
    /// `NAME` on the one loaded base: a request names its adapter as its
    /// `model`; the base's name runs without one.
    pub lora_dir: Option<PathBuf>,
    /// A Jinja chat template used instead of the model's own.
    pub chat_template_file: Option<PathBuf>,
    /// Pause an over-share user's youngest sequence for another user's
    /// request when no slot is free (the scheduler's rules).
    pub preempt: bool,
}

/// `--flash-attn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashAttn {
    On,
    Off,
    Auto,
}

impl std::str::FromStr for FlashAttn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" | "true" => Ok(FlashAttn::On),
            "off" | "false" => Ok(FlashAttn::Off),
            "auto" => Ok(FlashAttn::Auto),
            _ => Err(format!("`{s}`: use on, off or auto")),
        }
    }
}

/// `--cache-type-k/-v`: the KV cache types llama.cpp's CPU and GPU backends support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F16,
    Bf16,
    Q8_0,
    Q4_0,
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "bf16" => Ok(KvType::Bf16),
            "q8_0" => Ok(KvType::Q8_0),
            "q4_0" => Ok(KvType::Q4_0),
            _ => Err(format!("`{s}`: use f16, bf16, q8_0 or q4_0")),
        }
    }
}

impl KvType {
    fn llama(self) -> llama_cpp_2::context::params::KvCacheType {
        use llama_cpp_2::context::params::KvCacheType as K;
        match self {
            KvType::F16 => K::F16,
            KvType::Bf16 => K::BF16,
            KvType::Q8_0 => K::Q8_0,
            KvType::Q4_0 => K::Q4_0,
        }
    }
}

/// Model parameters: the layers offloaded and the devices, as configured.
fn model_params(cfg: &EngineConfig) -> anyhow::Result<LlamaModelParams> {
    let all = devices::devices();
    let chosen = devices::pick(&all, &cfg.devices)?;
    let any_gpu = if chosen.is_empty() {
        all.iter().any(devices::Device::is_gpu)
    } else {
        all.iter().any(|d| chosen.contains(&d.index) && d.is_gpu())
    };
    let layers = devices::layer_count(cfg.gpu_layers, any_gpu);
    if layers > 0 && !any_gpu && cfg.gpu_layers.is_some() {
        tracing::warn!(
            "--gpu-layers asked for, but no GPU device is present (devices: {}): everything runs on the CPU",
            all.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut p = LlamaModelParams::default().with_n_gpu_layers(if any_gpu { layers } else { 0 });
    if !chosen.is_empty() {
        p = p
            .with_devices(&chosen)
            .map_err(|e| anyhow!("--device: {e}"))?;
    }
    Ok(p)
}

/// Flash attention and KV cache types on a context's parameters.
fn attention(cfg: &EngineConfig, mut p: LlamaContextParams) -> anyhow::Result<LlamaContextParams> {
    let quantized_v = cfg
        .cache_type_v
        .is_some_and(|t| matches!(t, KvType::Q8_0 | KvType::Q4_0));
    if quantized_v && cfg.flash_attn == Some(FlashAttn::Off) {
        bail!("--cache-type-v q8_0/q4_0 needs flash attention (llama.cpp); drop --flash-attn off");
    }
    let fa = match cfg.flash_attn {
        Some(FlashAttn::On) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        Some(FlashAttn::Off) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        None if quantized_v => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        _ => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
    };
    p = p.with_flash_attention_policy(fa);
    if let Some(t) = cfg.cache_type_k {
        p = p.with_type_k(t.llama());
    }
    if let Some(t) = cfg.cache_type_v {
        p = p.with_type_v(t.llama());
    }
    Ok(p)
}

/// How an embedding model turns its token states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Last,
}

impl Pooling {
    /// llama.cpp's number for it (`LLAMA_POOLING_TYPE_*`).
    fn code(self) -> i32 {
        match self {
            Pooling::Mean => 1,
            Pooling::Cls => 2,
            Pooling::Last => 3,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            model: PathBuf::new(),
            name: None,
            parallel: 4,
            context: None,
            threads: None,
            queue: 64,
            batch: 512,
            verbose: false,
            api_key: None,
            pooling: None,
            gpu_layers: None,
            devices: Vec::new(),
            flash_attn: None,
            cache_type_k: None,
            cache_type_v: None,
            lora: Vec::new(),
            lora_dir: None,
            chat_template_file: None,
            preempt: true,
        }
    }
}

impl EngineConfig {
    /// `threads`, or every core this process may use.
    fn threads_or_all(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// A loaded model with its scheduler thread running.
pub struct Engine {
    pub state: Arc<server::EngineState>,
    _thread: std::thread::JoinHandle<()>,
}

fn backend() -> anyhow::Result<&'static LlamaBackend> {
    static BACKEND: std::sync::OnceLock<LlamaBackend> = std::sync::OnceLock::new();
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    // The CPU variant first: llama_backend_init() loads ggml's own pick
    // (which trusts cpuid about AMX) when no backend is loaded yet.
    let cpu = cpu::load()?;
    let b = LlamaBackend::init().map_err(|e| anyhow!("llama.cpp backend: {e}"))?;
    tracing::info!(
        "llama.cpp CPU backend: {} ({}); AMX: {:?}; devices: {}",
        cpu.variant,
        cpu.features.join(" "),
        cpu.amx,
        cpu.devices.join(", ")
    );
    if let Some(h) = cpu.hint() {
        tracing::warn!("{h}");
    }
    Ok(BACKEND.get_or_init(|| b))
}

/// Start the thread that owns a llama.cpp context: it creates the context
/// (`what` names it in the error), says whether that worked, and then runs
/// `run` on it until `run` returns. Returns once the context exists.
fn spawn_on_context<F>(
    name: &str,
    backend: &'static LlamaBackend,
    model: Arc<LlamaModel>,
    params: LlamaContextParams,
    what: String,
    run: F,
) -> anyhow::Result<std::thread::JoinHandle<()>>
where
    F: for<'m> FnOnce(llama_cpp_2::context::LlamaContext<'m>) + Send + 'static,
{
    spawn_on_context_with(name, backend, model, params, what, None, run)
}

/// [`spawn_on_context`], with LoRA adapters applied to the context before it runs.
fn spawn_on_context_with<F>(
    name: &str,
    backend: &'static LlamaBackend,
    model: Arc<LlamaModel>,
    params: LlamaContextParams,
    what: String,
    mut adapters: Option<Vec<(llama_cpp_2::model::LlamaLoraAdapter, f32)>>,
    run: F,
) -> anyhow::Result<std::thread::JoinHandle<()>>
where
    F: for<'m> FnOnce(llama_cpp_2::context::LlamaContext<'m>) + Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut ctx = match model.new_context(backend, params) {
                Ok(ctx) => ctx,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("llama.cpp could not create {what}: {e}")));
                    return;
                }
            };
            for (adapter, scale) in adapters.iter_mut().flatten() {
                if let Err(e) = ctx.lora_adapter_set(adapter, *scale) {
                    let _ = ready_tx.send(Err(anyhow!(
                        "llama.cpp could not apply the LoRA adapter: {e}"
                    )));
                    return;
                }
            }
            let _ = ready_tx.send(Ok(()));
            run(ctx);
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the {name} thread died while creating its context"))??;
    Ok(thread)
}

/// Load llama.cpp's backends as the engine does, and say what runs here.
pub fn machine_report() -> anyhow::Result<&'static cpu::CpuReport> {
    memory::install_log_capture(false);
    backend()?;
    let _ = memory::take_log();
    cpu::load()
}

/// Serve the engine's API on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: &Engine,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = server::router(engine.state.clone());
    axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app,
    )
    .with_graceful_shutdown(shutdown)
    .await
}
