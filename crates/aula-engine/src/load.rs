//! Loading a model: the file checked, the backends and devices, the context
//! on its own thread, LoRA adapters, and an embedding model's side.

use super::*;

/// Check the file before llama.cpp sees it, so a wrong path or a file that is
/// not GGUF gets a plain message.
pub(super) fn check_gguf(path: &std::path::Path) -> anyhow::Result<()> {
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
pub(super) fn load_adapter_dir(
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
    let preempt = cfg.preempt;
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
                preempt,
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
        preempt: cfg.preempt,
    });
    Ok(Engine {
        state,
        _thread: thread,
    })
}

/// An embedding model: a context with embeddings on and the model's pooling,
/// and the [`embed`] loop on its own thread.
pub(super) fn load_embedding(
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
        preempt: false,
    });
    Ok(Engine {
        state,
        _thread: thread,
    })
}
