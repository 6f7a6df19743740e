use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const HOME_HELP: &str = "\
Aula keeps its models, database, logs and default config (aula.toml) in one data
directory: $AULA_HOME if set, else $XDG_DATA_HOME/aula, else ~/.local/share/aula.";

#[derive(Debug, Parser)]
#[command(name = "aula", version, about = "One GPU workstation as a fair, shared LLM service for a whole class", after_help = HOME_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: the OpenAI-compatible API in front of every model.
    Serve(ServeArgs),
    /// Run one GGUF model as an OpenAI-compatible engine (llama.cpp, continuous batching).
    Engine(EngineArgs),
    /// Load-test an OpenAI-compatible server and report latency and throughput.
    Bench(BenchArgs),
    /// Can this machine run these models, for how many users, how fast (memory, speed, placement, report).
    Plan(PlanArgs),
    /// Show the data directory and the models in it.
    Home,
    /// What this machine runs models on: the llama.cpp CPU variant chosen at run time, its features, AMX, devices.
    Doctor(DoctorArgs),
    /// Measure this machine: memory bandwidth, and each model's load time, memory, prefill and decode speed
    /// with Aula's engine; written to $AULA_HOME/assessment.toml for `aula plan --hardware this`.
    Assess(AssessArgs),
    /// Manage users: their role (admin, teacher, student) and groups.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API keys (shown once, stored only as a hash).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Report usage from the ledger.
    Usage(UsageArgs),
    /// Copy the database (consistent, also while a gateway serves), the configuration and the
    /// uploads, fine-tuning and adapter folders into a new folder.
    Backup(BackupArgs),
    /// Put back a folder made by `aula backup` (no gateway may be serving); what it replaces is
    /// moved into before-restore-DATE/ in the data directory, not deleted.
    Restore(BackupArgs),
    /// Show a running gateway's models: state, planned and actual memory, slots, queue, idle time.
    Ps(PsArgs),
    /// Load a model on a running gateway (evicting idle ones if memory is short).
    Load(ModelOpArgs),
    /// Unload a model on a running gateway.
    Unload(ModelOpArgs),
    /// Course material on a running gateway: vector stores that students search and `file_search` cites.
    #[command(subcommand)]
    Stores(StoresCommand),
    /// Print a document's text (text, Markdown, HTML, PDF, DOCX): what a
    /// vector store ingests. The gateway runs it as a child process, so that
    /// a document that crashes or hangs its parser fails alone. Exit 2: the
    /// document cannot be read (the reason on stderr).
    #[command(hide = true)]
    Extract(ExtractArgs),
}

#[derive(Debug, Subcommand)]
pub enum StoresCommand {
    /// Upload files (and the files in directories) into a new store, and wait while they are ingested.
    Create {
        name: String,
        /// Files, or directories (read recursively; hidden entries skipped).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A group whose members may search the store (teachers and admins); repeat for several.
        #[arg(long = "share")]
        shares: Vec<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// The stores you own or that are shared with your groups.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Search a store.
    Search {
        store: String,
        query: String,
        /// hybrid (BM25 and embeddings fused), dense or lexical.
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// Most results.
        #[arg(short = 'n', long, default_value_t = 5)]
        max_results: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Delete a store (its files stay uploaded).
    Rm {
        store: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The document.
    pub path: std::path::PathBuf,
    /// Its original file name (its extension tells the kind when the content does not).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PoolingArg {
    /// The mean of the token states (sentence-transformers' usual).
    Mean,
    /// The first token's state ([CLS]).
    Cls,
    /// The last token's state (decoder embedding models).
    Last,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON (the same object `aula engine`'s /health has as `cpu`).
    #[arg(long)]
    pub json: bool,
}

/// How to reach a running gateway's API.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "AULA_URL")]
    pub url: String,
    /// Your API key (default: on this machine, the local admin token of the
    /// data directory; not needed when the gateway has no users).
    #[arg(long, env = "AULA_API_KEY")]
    pub api_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct AssessArgs {
    /// GGUF files to measure [default: the chat models in the data directory's models/].
    #[arg(long)]
    pub model: Vec<PathBuf>,
    /// Context per stream the engine is started with.
    #[arg(long, default_value_t = 2048)]
    pub context: u32,
    /// Streams measured together (the engine's slots).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Fewer repeats, smaller prompts and buffers: a minute or two, a wider spread.
    #[arg(long)]
    pub quick: bool,
    /// Measure everything again (a new run otherwise keeps what this build measured).
    #[arg(long)]
    pub again: bool,
    /// Run although a gateway serves this data directory: half the cores, one stream.
    #[arg(long)]
    pub while_serving: bool,
    /// The gateway whose serving stops an assessment.
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Args)]
pub struct ModelOpArgs {
    pub model: String,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// Where the database is: `[server] database` in the config, else aula.db in the data directory.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Configuration file (default: aula.toml in the data directory, if present).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user.
    Add {
        name: String,
        #[arg(long, default_value = "student")]
        role: String,
        /// A group (a class, a course); repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Replace the role and groups of an existing user instead of failing.
        #[arg(long)]
        update: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Add or update users from a CSV file: name,role,groups (groups separated by ; or spaces).
    Import {
        file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Remove a user and their keys (their usage records stay).
    Remove {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key for USER and print it, alone, on standard output.
    Create {
        user: String,
        /// Days until the key stops working (fractions allowed).
        #[arg(long)]
        expires: Option<f64>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke one key (by its id) or every key of a user.
    Revoke {
        id_or_user: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List keys (ids and dates, never the keys themselves).
    List {
        user: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Sum by user, group or model.
    #[arg(long, default_value = "user")]
    pub by: String,
    /// Since a date (2026-09-01) or for a past span (24h, 7d) [default: everything].
    #[arg(long)]
    pub since: Option<String>,
    /// Print CSV.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup folder (new or empty for `aula backup`).
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (default: aula.toml in the data directory, if present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1, or [server] host].
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 8080, or [server] port].
    #[arg(long)]
    pub port: Option<u16>,
    /// Serve a non-loopback address with no authentication configured (anyone who can reach it may use it).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// The GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Name clients use in `model` (default: the file name without .gguf, lower-cased).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port; 0 picks a free one.
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
    /// Sequences decoded together in one batch (slots).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Tokens one request may use, prompt and completion together [default: min(4096, trained context)].
    #[arg(long)]
    pub context: Option<u32>,
    /// CPU threads for llama.cpp [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Requests that may wait for a free slot; beyond that, 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Most tokens decoded in one step (generation plus prompt chunks).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Echo llama.cpp's own log.
    #[arg(long)]
    pub verbose: bool,
    /// Embedding models: pool token states this way instead of the model's
    /// own; for a model without pooling, serve it as an embedding model.
    #[arg(long, value_enum)]
    pub pooling: Option<PoolingArg>,
    /// Layers to offload to the GPU: a number or `all` [default: all when a
    /// GPU backend is built in and a device is present, else none].
    #[arg(long = "gpu-layers", value_name = "N|all")]
    pub gpu_layers: Option<aula_engine::devices::GpuLayers>,
    /// Devices to run on, by llama.cpp's names (CUDA0, Vulkan0; comma-separated
    /// or repeated) [default: every GPU]; `aula doctor` lists them.
    #[arg(long)]
    pub device: Vec<String>,
    /// Flash attention: on, off or auto [default: auto].
    #[arg(long = "flash-attn", value_name = "on|off|auto")]
    pub flash_attn: Option<aula_engine::FlashAttn>,
    /// KV cache type for keys: f16, bf16, q8_0 or q4_0 [default: f16].
    #[arg(long = "cache-type-k")]
    pub cache_type_k: Option<aula_engine::KvType>,
    /// KV cache type for values (q8_0/q4_0 turn flash attention on).
    #[arg(long = "cache-type-v")]
    pub cache_type_v: Option<aula_engine::KvType>,
    /// A LoRA adapter (GGUF, for this base model) applied to every request:
    /// PATH or PATH:SCALE [default scale 1]; repeat for several.
    #[arg(long, value_name = "PATH[:SCALE]")]
    pub lora: Vec<String>,
    /// A directory of LoRA adapters: each `NAME.gguf` there is served as the
    /// model `NAME` on this one loaded base (what `aula serve` does for
    /// fine-tuned models); read at start.
    #[arg(long = "lora-dir", value_name = "DIR")]
    pub lora_dir: Option<std::path::PathBuf>,
    /// A Jinja chat template to use instead of the model's own (as
    /// llama-server's flag of that name): for a GGUF without one, or one
    /// whose template knows no tools. Checked at start.
    #[arg(long = "chat-template-file", value_name = "PATH")]
    pub chat_template_file: Option<std::path::PathBuf>,
    /// Never pause a sequence for another user's request. By default, when
    /// no slot is free and a request's user runs at least two fewer
    /// sequences than another user, that user's youngest sequence is paused
    /// (its KV copied to memory) and resumes when a slot frees; only
    /// requests that name their `user` (as `aula serve` does) take part.
    #[arg(long = "no-preempt")]
    pub no_preempt: bool,
    /// Require `Authorization: Bearer <key>` on every request. Taken from the
    /// environment, so that it never shows in the process list; `aula serve`
    /// gives each engine it starts a fresh random one.
    #[arg(
        long = "api-key",
        env = "AULA_ENGINE_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub api_key: Option<String>,
    /// Serve on this inherited, already-listening socket instead of binding
    /// --host/--port (how `aula serve` hands an engine a port it never released).
    #[arg(long, hide = true)]
    pub listen_fd: Option<i32>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server base URL, e.g. http://127.0.0.1:8080 (a trailing /v1 is fine).
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub model: String,
    /// Simulated users (requests are spread over them round-robin).
    #[arg(long, default_value_t = 1)]
    pub users: usize,
    /// Requests in flight at once [default: --users].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Total requests to send [default: 100 when --duration is not given].
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Run for this long instead: 30s, 2m, 500ms. The figures are for this
    /// window: no request starts after it, a streamed answer still running
    /// at its end is closed once it has its first token (its tokens inside
    /// the window count), and a whole answer ending after it counts its
    /// latency, not its tokens. A request still unanswered one more window
    /// after the end is given up and counted as failed ("no answer").
    #[arg(long)]
    pub duration: Option<String>,
    /// Approximate prompt length in tokens.
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Stream responses (needed for time to first token and inter-token latency).
    #[arg(long)]
    pub stream: bool,
    /// API key sent as a bearer token by every user.
    #[arg(long, conflicts_with = "keys")]
    pub api_key: Option<String>,
    /// File with one API key per line, one per simulated user.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Fairness scenario: user 0 keeps this many requests in flight while each
    /// other user (--users - 1 of them) sends one at a time; the report splits
    /// time to first token between user 0 and the others.
    #[arg(long)]
    pub heavy: Option<usize>,
    /// A class: each of --users waits a random time of this mean (exponential)
    /// before each request, one request at a time, as students read and type:
    /// 5s, 30s. The report's answer rate and time to first token are what
    /// `aula plan --students` predicts. With --heavy, users 1.. think and
    /// user 0 keeps its requests in flight: a class beside one heavy user.
    #[arg(long, conflicts_with = "concurrency")]
    pub think: Option<String>,
    /// In a class (--think): this many of the users (0, 1, ...) do not
    /// think but ask back to back; the report splits time to first token
    /// between them and the rest.
    #[arg(
        long,
        default_value_t = 0,
        requires = "think",
        conflicts_with = "heavy"
    )]
    pub heavy_users: usize,
    /// The heavy users' max_tokens (default: --max-tokens): user 0's with
    /// --heavy, or those of --heavy-users.
    #[arg(long)]
    pub heavy_max_tokens: Option<u32>,
    /// With --think: each user's next question comes its think time after
    /// the previous question was sent, not after its answer came back
    /// (open-loop arrivals: users who do not ask less when answers are
    /// slow), so runs that answer at different speeds get the same
    /// questions at the same times. A user may then have several questions
    /// in flight.
    #[arg(long, requires = "think")]
    pub open_loop: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// GGUF model files, Hugging Face config.json files, or ids from the built-in catalog (e.g. llama-3.1-8b).
    #[arg(required_unless_present_any = ["list", "explain", "report"])]
    pub models: Vec<PathBuf>,
    /// Hardware profile: gb10 (DGX Spark), h100-sxm, h100-pcie, h200, a100-40gb, a100-80gb, l40s, rtx-4090, rtx-3090, m2-ultra, m3-max, m4-max;
    /// or `this`: this machine as `aula assess` measured it.
    #[arg(long, default_value = "gb10", conflicts_with = "detect")]
    pub hardware: String,
    /// Use this machine: memory and cores from the OS, an NVIDIA GPU through NVML.
    #[arg(long)]
    pub detect: bool,
    /// Weights for catalog and config.json models: bf16, fp16, fp8, int8, int4, nf4 (vLLM, SGLang), or a llama.cpp file type (q8_0, q6_k, q5_k_m, q4_k_m, q4_0, q3_k_m, q2_k, mxfp4, ...) sized tensor by tensor as llama-quantize makes it. GGUF files use their own. Default: f16, or the precision the model was released in (gpt-oss: mxfp4; a pre-quantized config.json: its quantization_config).
    #[arg(long)]
    pub precision: Option<String>,
    /// Tokens per request (prompt + completion); vLLM's --max-model-len.
    #[arg(long, default_value_t = 4096)]
    pub context: u32,
    /// Requests served at once (slots, max-num-seqs).
    #[arg(long, visible_alias = "parallel", default_value_t = 4)]
    pub users: u32,
    /// embedded (aula engine, llama.cpp), llama-server, vllm or sglang.
    #[arg(long, default_value = "embedded")]
    pub engine: String,
    /// vLLM's --gpu-memory-utilization (SGLang's --mem-fraction-static).
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// KV cache type: f16/bf16, fp8 (vLLM), q8_0 or q4_0 (llama.cpp).
    #[arg(long, default_value = "f16")]
    pub kv_cache: String,
    /// Prompt length for the time-to-first-token estimate.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: u32,
    /// llama.cpp micro-batch (Aula's `engine --batch`).
    #[arg(long, default_value_t = 512)]
    pub batch: u32,
    /// vLLM's --max-num-batched-tokens (sizes its activation profile).
    #[arg(long, default_value_t = 8192)]
    pub max_num_batched_tokens: u32,
    /// vLLM engine version whose memory profiling to plan: v1 (default;
    /// profiles --max-num-batched-tokens) or v0 (profiles a batch of
    /// max_model_len without chunked prefill).
    #[arg(long, default_value = "v1")]
    pub engine_version: aula_planner::estimate::EngineVersion,
    /// A speculative-decoding draft model (catalog id, config.json or GGUF):
    /// its weights and KV layers are planned beside the target's (vLLM).
    #[arg(long, value_name = "MODEL", conflicts_with = "draft_layers")]
    pub draft: Option<PathBuf>,
    /// A draft head of N layers of the target's shape (EAGLE, MTP) instead of a separate model.
    #[arg(long, value_name = "N")]
    pub draft_layers: Option<u32>,
    /// llama.cpp's -ngl for the embedded engine (or llama-server): how
    /// much of each model is in GPU memory and how much stays in host
    /// memory; `all` offloads everything, `fit` the most that fits the
    /// hardware's GPU memory.
    #[arg(long = "gpu-layers", value_name = "N|all|fit")]
    pub gpu_layers: Option<String>,
    /// The llama.cpp build generation the speed assumes: 2025 (current,
    /// default), 2024 or 2023 (see docs/planner-calibration.md).
    #[arg(long, value_name = "YEAR")]
    pub llama_cpp_generation: Option<String>,
    /// Print the full breakdown as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print every formula the figures come from.
    #[arg(long)]
    pub explain: bool,
    /// List the catalog's models and the hardware profiles.
    #[arg(long)]
    pub list: bool,
    /// Write "what can you run on this machine" for the whole catalog: FILE.md (with FILE.svg beside it) or FILE.html.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also estimate fine-tuning: full (AdamW), LoRA and QLoRA, with and without gradient checkpointing.
    #[arg(long)]
    pub finetune: bool,
    /// Tokens per training sample (fine-tuning).
    #[arg(long, default_value_t = 2048)]
    pub train_tokens: u32,
    /// LoRA rank (fine-tuning).
    #[arg(long, default_value_t = 16)]
    pub lora_rank: u32,
    /// How many students the box holds at --rate and --ttft, for the models
    /// given (split evenly), each with --users slots; with a number, also
    /// what that many students get. A model `aula assess` measured on this
    /// machine (--hardware this) is planned from its measurements, others
    /// from the formulas; the output says which.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    pub students: Option<u32>,
    /// Tokens per second each student's answer should stream at (the median request).
    #[arg(long, default_value_t = 10.0, requires = "students")]
    pub rate: f64,
    /// The 95th percentile wait for a first token, queueing included: 2s, 1500ms.
    #[arg(long, default_value = "2s", requires = "students")]
    pub ttft: String,
    /// Mean time a student reads and types between an answer and the next question.
    #[arg(long, default_value = "30s", requires = "students")]
    pub think: String,
    /// Tokens of each answer (with --students; --prompt-tokens is the question).
    #[arg(long, default_value_t = 256, requires = "students")]
    pub answer_tokens: u32,
}
