//! What the fleet is asked to serve: one typed spec per model, made from
//! `aula.toml` by the gateway's configuration (which checks every key).

use aula_planner::EngineKind;
use std::path::{Path, PathBuf};

/// A KV cache element type `aula engine` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F16,
    Bf16,
    Q8_0,
    Q4_0,
}

impl KvType {
    pub const ALL: [KvType; 4] = [KvType::F16, KvType::Bf16, KvType::Q8_0, KvType::Q4_0];

    /// The name in `aula.toml` and on `aula engine`'s command line.
    pub fn as_str(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Bf16 => "bf16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    pub fn parse(s: &str) -> Option<KvType> {
        KvType::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Layers `aula engine` offloads to the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuLayers {
    All,
    Count(u32),
}

/// Aula's own engine's settings beyond the model and its slots, typed from
/// `aula.toml` (checked there) to the command line, which `launch.rs` alone
/// writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineFlags {
    pub gpu_layers: Option<GpuLayers>,
    /// Device names (`CUDA0`, `Vulkan0`, comma-separated).
    pub device: Option<String>,
    /// `on`, `off` or `auto`.
    pub flash_attn: Option<String>,
    pub cache_type_k: Option<KvType>,
    pub cache_type_v: Option<KvType>,
    pub chat_template_file: Option<PathBuf>,
    /// Where the engine finds the adapters of its fine-tuned models.
    pub lora_dir: Option<PathBuf>,
    /// The model's `preempt = false`: the engine pauses nobody (the gateway
    /// then names no user to it, and a client's `user` must not steer it).
    pub no_preempt: bool,
}

/// What a model file is, read from its header once, when its spec is made:
/// the one answer the gateway, the fleet and `aula doctor` use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelFacts {
    /// An embedding model: its architecture pools token states into one
    /// vector. It serves /v1/embeddings and no chat.
    pub embedding: bool,
}

impl ModelFacts {
    /// The facts of a GGUF file (a file that cannot be read: a chat model,
    /// which its engine will then fail to load, saying why).
    pub fn read(gguf: &Path) -> ModelFacts {
        ModelFacts {
            embedding: aula_planner::gguf::GgufFile::open(gguf)
                .ok()
                .and_then(|f| f.arch_u64("pooling_type"))
                .is_some_and(|p| p > 0),
        }
    }
}

/// What one model is served by, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Embedded {
        gguf: PathBuf,
        /// Read from `gguf` when the spec was made.
        facts: ModelFacts,
        parallel: Option<usize>,
        context: Option<u32>,
        threads: Option<usize>,
        /// GPU offload, devices, KV types, chat template, adapters.
        flags: EngineFlags,
    },
    Url {
        /// One base URL per replica.
        bases: Vec<String>,
        /// The name the server knows the model by, if not `name`.
        upstream_model: Option<String>,
        /// Requests Aula lets each replica run at once.
        parallel: Option<usize>,
        /// The environment variable holding the servers' key, if they need one.
        key_env: Option<String>,
    },
    /// vLLM, llama-server or SGLang, started by Aula with planned arguments.
    External {
        /// One of the kinds [`EngineKind::is_external`] names (config
        /// checks it).
        kind: EngineKind,
        /// A GGUF (llama-server) or a model directory / id (vLLM, SGLang).
        model: String,
        command: Option<String>,
        parallel: Option<usize>,
        context: Option<u32>,
        extra_args: Vec<String>,
        precision: Option<String>,
        plan_as: Option<String>,
        /// vLLM: the directory of LoRA adapters it loads at run time
        /// (crate::adapters), when fine-tuned models are served on it.
        lora_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub aliases: Vec<String>,
    /// Engines to start (embedded and external engines; url models list their replicas).
    pub replicas: usize,
    pub source: ModelSource,
    pub pinned: bool,
    pub preload: bool,
    pub keep_alive: Option<std::time::Duration>,
    /// Its engine pauses over-share users' sequences (Aula's own engine):
    /// the gateway names each request's user to it and admits a user with
    /// nothing running past its slots.
    pub preempt: bool,
}

impl ModelSpec {
    /// Served by Aula's own engine from an embedding model's GGUF.
    pub fn is_embedding(&self) -> bool {
        matches!(&self.source, ModelSource::Embedded { facts, .. } if facts.embedding)
    }
}
