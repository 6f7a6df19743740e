//! `aula engine`: one GGUF model in its own process, served over the OpenAI
//! HTTP API with llama.cpp (through `llama-cpp-2`) and continuous batching.
//!
//! * [`scheduler`] — the batching loop on the llama.cpp context;
//! * [`embed`] — the batching loop of embedding models;
//! * [`server`] — HTTP handlers;
//! * [`template`] — chat templates (minijinja);
//! * [`output`] — UTF-8 assembly and stop sequences;
//! * [`memory`] — what llama.cpp allocated, for `/health`;
//! * [`cpu`] — which CPU kernels llama.cpp runs, chosen at run time.

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

/// Check the file before llama.cpp sees it, so a wrong path or a file that is
/// not GGUF gets a plain message.
fn check_gguf(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("cannot open model file {}", path.display()))?;
    let mut magic = [0u8; 4];
    if f.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        bail!(
            "{} is not a GGUF model file (it does not start with the GGUF magic)",
            path.display()
        );
    }
    Ok(())
}

/// Load every `NAME.gguf` adapter in `dir` (sorted by name) on the model.
/// A missing directory is no adapters; an adapter that does not load is
/// skipped with a warning, so one bad file cannot keep the base from serving.
fn load_adapter_dir(
    model: &mut LlamaModel,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<scheduler::Adapter>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => bail!("--lora-dir {}: {e}", dir.display()),
    };
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if let Err(e) = check_gguf(&path) {
            tracing::warn!("adapter {name} skipped: {e}");
            continue;
        }
        match model.lora_adapter_init(&path) {
            Ok(adapter) => out.push(scheduler::Adapter {
                name,
                adapter,
                bytes,
            }),
            Err(e) => tracing::warn!(
                "adapter {name} skipped: llama.cpp could not load {}: {e}",
                path.display()
            ),
        }
    }
    Ok(out)
}

/// Load the model and start the scheduler. Blocking: call from a blocking context.
pub fn load(cfg: &EngineConfig) -> anyhow::Result<Engine> {
    if cfg.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    check_gguf(&cfg.model)?;
    memory::install_log_capture(cfg.verbose);
    let backend = backend()?;
    let _ = memory::take_log();
    let mut model =
        LlamaModel::load_from_file(backend, &cfg.model, &model_params(cfg)?).map_err(|e| {
            anyhow!(
                "llama.cpp could not load {}: {e} (the file may be truncated or corrupt)",
                cfg.model.display()
            )
        })?;
    let mut adapters = Vec::new();
    for (path, scale) in &cfg.lora {
        check_gguf(path)?;
        let a = model.lora_adapter_init(path).map_err(|e| {
            anyhow!(
                "llama.cpp could not load the LoRA adapter {}: {e} (is it an adapter of this base model, in GGUF?)",
                path.display()
            )
        })?;
        adapters.push((a, *scale));
    }
    let served = match &cfg.lora_dir {
        Some(dir) if !cfg.lora.is_empty() => {
            bail!(
                "--lora and --lora-dir {} cannot be combined: an adapter for every request, or one chosen per request",
                dir.display()
            )
        }
        Some(dir) => load_adapter_dir(&mut model, dir)?,
        None => Vec::new(),
    };
    let model = Arc::new(model);
    let name = match &cfg.name {
        Some(n) => n.clone(),
        None => aula_planner::model_name_for_file(&cfg.model),
    };
    let arch = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    // A model that pools its token states into one vector is an embedding
    // model: it gets /v1/embeddings and the embedding loop instead of chat.
    let pooling = model
        .meta_val_str(&format!("{arch}.pooling_type"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 0);
    // `--pooling` wins over the model's own, and makes any model an embedding model.
    let pooling = cfg.pooling.map(Pooling::code).or(pooling);
    if let Some(pooling) = pooling {
        if !adapters.is_empty() || !served.is_empty() {
            bail!("--lora: LoRA adapters are for chat models, not embedding models");
        }
        return load_embedding(cfg, backend, model, &arch, name, pooling);
    }
    let train_ctx = model.n_ctx_train();
    let context = cfg.context.unwrap_or_else(|| train_ctx.min(4096));
    if context < 16 {
        bail!("--context must be at least 16 tokens");
    }
    if context > train_ctx {
        bail!(
            "--context {context} is larger than the {train_ctx} tokens this model was trained for"
        );
    }
    let threads = cfg.threads_or_all();
    let n_ctx = context
        .checked_mul(cfg.parallel as u32)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| anyhow!("--context x --parallel is too large"))?;
    let batch = cfg.batch.max(cfg.parallel).max(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(Some(n_ctx))
        .with_n_batch(batch as u32)
        .with_n_ubatch(batch as u32)
        .with_n_seq_max(cfg.parallel as u32)
        // One KV stream per slot: batched greedy decoding then matches single-sequence decoding.
        .with_kv_unified(false)
        // Sliding-window layers keep only their window (plus one batch), as llama-server does.
        .with_swa_full(false)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let params = attention(cfg, params)?;

    let vocab = model.vocab();
    let bos_text =
        String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None)).into_owned();
    let eos_text =
        String::from_utf8_lossy(&vocab.token_to_piece(vocab.eos(), true, None)).into_owned();
    let add_bos = vocab.should_add_bos();
    let given = match &cfg.chat_template_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow!("--chat-template-file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let from_file = given.is_some();
    let mut template = template::ChatTemplate::new(
        given.or_else(|| model.meta_val_str("tokenizer.chat_template").ok()),
        &arch,
        bos_text.clone(),
        eos_text,
    )
    .map_err(|e| {
        if from_file {
            anyhow!("the chat template of --chat-template-file does not compile: {e}")
        } else {
            anyhow!("the model's chat template does not compile: {e}")
        }
    })?;
    if from_file {
        template.source = template::TemplateSource::File;
    }

    let stats = Arc::new(scheduler::Stats::default());
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    let reuse_prefix = model
        .meta_val_str(&format!("{arch}.attention.sliding_window"))
        .is_err();
    let thread_model = model.clone();
    let parallel = cfg.parallel;
    let thread_stats = stats.clone();
    let adapter_names: Vec<(String, u64)> =
        served.iter().map(|a| (a.name.clone(), a.bytes)).collect();
    let thread = spawn_on_context_with(
        "aula-batcher",
        backend,
        model.clone(),
        params,
        format!("a context of {n_ctx} tokens"),
        Some(adapters),
        move |ctx| {
            scheduler::Scheduler {
                reuse_prefix,
                model: thread_model,
                ctx,
                parallel,
                n_batch: batch,
                stats: thread_stats,
                adapters: served,
                current_adapter: None,
                turn: 0,
            }
            .run(jobs_rx)
        },
    )?;
    let log = memory::take_log();
    let memory = memory::parse_load_log(&log, model.size());
    let placement = devices::placement(&log);
    let state = Arc::new(server::EngineState {
        name,
        model: model.clone(),
        template,
        jobs: jobs_tx,
        stats,
        memory,
        placement,
        parallel: cfg.parallel,
        context,
        threads,
        max_queue: cfg.queue,
        inflight: AtomicUsize::new(0),
        add_bos,
        bos_text,
        api_key: cfg.api_key.clone(),
        embed: None,
        adapters: adapter_names,
        constraints: constraint::Constraints::new(model.clone()),
    });
    Ok(Engine {
        state,
        _thread: thread,
    })
}

/// An embedding model: a context with embeddings on and the model's pooling,
/// and the [`embed`] loop on its own thread.
fn load_embedding(
    cfg: &EngineConfig,
    backend: &'static LlamaBackend,
    model: Arc<LlamaModel>,
    arch: &str,
    name: String,
    pooling: i32,
) -> anyhow::Result<Engine> {
    use llama_cpp_2::context::params::LlamaPoolingType;
    let train_ctx = model.n_ctx_train() as usize;
    // A sentence-transformers model's own limit (MiniLM: 256 word pieces),
    // written by Aula's converter; otherwise what the model was trained for.
    let max_tokens = model
        .meta_val_str("aula.embedding.max_seq_length")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(train_ctx)
        .min(train_ctx.max(1));
    let normalize = model
        .meta_val_str("aula.embedding.normalize")
        .map(|v| v.trim() != "false")
        .unwrap_or(true);
    let pooling_name = match pooling {
        1 => "mean",
        2 => "cls",
        3 => "last",
        4 => "rank",
        _ => "other",
    };
    // Every input whole in one batch (non-causal attention), several inputs per batch.
    let n_batch = cfg.batch.max(max_tokens).max(1);
    let n_seq = (cfg.parallel * 16).clamp(1, 64);
    let threads = cfg.threads_or_all();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_batch as u32))
        .with_n_batch(n_batch as u32)
        .with_n_ubatch(n_batch as u32)
        .with_n_seq_max(n_seq as u32)
        .with_embeddings(true)
        .with_pooling_type(match pooling {
            1 => LlamaPoolingType::Mean,
            2 => LlamaPoolingType::Cls,
            3 => LlamaPoolingType::Last,
            _ => LlamaPoolingType::Unspecified,
        })
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let info = embed::EmbeddingInfo {
        dimensions: model.n_embd_out().max(0) as usize,
        max_tokens,
        pooling: pooling_name.into(),
        normalize,
    };
    let stats = Arc::new(embed::EmbedStats::default());
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    let thread_stats = stats.clone();
    let thread = spawn_on_context(
        "aula-embedder",
        backend,
        model.clone(),
        params,
        format!("an embedding context of {n_batch} tokens"),
        move |ctx| {
            embed::Embedder {
                ctx,
                n_batch,
                n_seq,
                normalize,
                stats: thread_stats,
            }
            .run(jobs_rx)
        },
    )?;
    let log = memory::take_log();
    let memory = memory::parse_load_log(&log, model.size());
    let placement = devices::placement(&log);
    // Chat requests never reach a scheduler: the handlers refuse them first.
    let (chat_tx, _) = std::sync::mpsc::channel();
    let template = template::ChatTemplate::new(None, arch, String::new(), String::new())
        .map_err(|e| anyhow!("the built-in chat template does not compile: {e}"))?;
    let state = Arc::new(server::EngineState {
        name,
        model: model.clone(),
        template,
        jobs: chat_tx,
        stats: Arc::new(scheduler::Stats::default()),
        memory,
        placement,
        parallel: n_seq,
        context: max_tokens as u32,
        threads,
        max_queue: cfg.queue,
        inflight: AtomicUsize::new(0),
        add_bos: true,
        bos_text: String::new(),
        api_key: cfg.api_key.clone(),
        adapters: Vec::new(),
        embed: Some(server::EmbedState {
            jobs: jobs_tx,
            info,
            stats,
        }),
        constraints: constraint::Constraints::new(model.clone()),
    });
    Ok(Engine {
        state,
        _thread: thread,
    })
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
