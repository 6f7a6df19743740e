//! `[[models]]`: each entry checked (names, source, numbers, engine, how it
//! is kept), then turned into the fleet's typed [`ModelSpec`]. The engine
//! name is parsed once, by [`ModelEntry::engine`].

use super::{ConfigError, Invalid, line_of, normalize_base, parse_duration};
use aula_fleet::spec::{EngineFlags, GpuLayers, KvType, ModelSource, ModelSpec};
use aula_protocol::admin::EngineKind;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: Spanned<String>,
    /// A GGUF file served by an embedded `aula engine` (relative paths are
    /// looked up in the model directory).
    pub gguf: Option<Spanned<PathBuf>>,
    /// An OpenAI-compatible server that is already running.
    pub url: Option<Spanned<Urls>>,
    /// Other names clients may use for this model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// For `url` servers: the name that server knows the model by, when it
    /// differs from `name` (requests are rewritten on the way).
    pub upstream_model: Option<String>,
    /// For `url` servers that require a key (another Aula, a vLLM started
    /// with `--api-key`): the environment variable that holds it (the key
    /// itself is never written in this file).
    pub api_key_env: Option<Spanned<String>>,
    pub parallel: Option<Spanned<usize>>,
    pub context: Option<Spanned<u32>>,
    pub threads: Option<Spanned<usize>>,
    /// Embedded engines on a GPU: layers to offload, a number or "all"
    /// [default: all when a GPU is present].
    pub gpu_layers: Option<Spanned<toml::Value>>,
    /// Devices by llama.cpp's names ("CUDA0", "Vulkan0"; comma-separated).
    pub device: Option<Spanned<String>>,
    /// Flash attention: "on", "off" or "auto" [default: auto].
    pub flash_attn: Option<Spanned<String>>,
    /// KV cache types: "f16", "bf16", "q8_0" or "q4_0" [default: f16].
    pub cache_type_k: Option<Spanned<String>>,
    pub cache_type_v: Option<Spanned<String>>,
    /// A Jinja chat template used instead of the GGUF's own (embedded
    /// engines; relative to `models_dir`), e.g. one that knows tools.
    pub chat_template_file: Option<Spanned<PathBuf>>,
    /// Never evicted or stopped for idleness; started with the gateway.
    pub pinned: Option<bool>,
    /// Start with the gateway if it fits [default: true]; else on first request.
    pub preload: Option<bool>,
    /// Stop after this long without requests ("30s", "10m", "2h").
    pub keep_alive: Option<Spanned<String>>,
    /// Who runs it: `embedded` (aula engine, the default for `gguf`),
    /// `llama-server` (a `gguf`), `vllm` or `sglang` (a `model`).
    pub engine: Option<Spanned<String>>,
    /// For vLLM and SGLang: a Hugging Face model directory (or id).
    pub model: Option<Spanned<String>>,
    /// The program to run [default: vllm, llama-server, python3 -m sglang.launch_server].
    pub command: Option<Spanned<String>>,
    /// More arguments for the engine, after the planned ones.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Weight precision for the plan of a vLLM/SGLang model [default: bf16].
    pub precision: Option<Spanned<String>>,
    /// A catalog id to plan a vLLM/SGLang model by, when `model` has no local config.json.
    pub plan_as: Option<Spanned<String>>,
    /// Engines Aula starts for this model (each with `parallel` slots);
    /// requests go to the one with the fewest outstanding.
    pub replicas: Option<Spanned<usize>>,
    /// The engine pauses an over-share user's sequence for a user with
    /// nothing running (Aula's own engine does; see its scheduler): the
    /// gateway tells it whose request is whose and lets such a user's
    /// request past `parallel` [default: true for `gguf` models, false for
    /// `url` ones; only those two may set it].
    pub preempt: Option<Spanned<bool>>,
}

/// One server, or several replicas of it (balanced by least outstanding requests).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    pub fn list(&self) -> Vec<&String> {
        match self {
            Urls::One(u) => vec![u],
            Urls::Many(v) => v.iter().collect(),
        }
    }
}

impl ModelEntry {
    /// The `engine` key, parsed (None: not given); an unknown name is an error.
    pub fn engine(&self) -> Result<Option<EngineKind>, String> {
        let Some(e) = &self.engine else {
            return Ok(None);
        };
        let name = e.get_ref().as_str();
        EngineKind::parse(name).map(Some).ok_or_else(|| {
            format!(
                "key `engine`: `{name}` is not an engine; use embedded, llama-server, vllm, sglang or url"
            )
        })
    }

    /// The external engine Aula starts for this entry, if any.
    fn external(&self) -> Option<EngineKind> {
        self.engine().ok().flatten().filter(|k| k.is_external())
    }
}

/// Check every entry; the first mistake names its key and line.
pub(super) fn check(
    models: &[ModelEntry],
    text: &str,
    invalid: Invalid,
) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for m in models {
        check_names(m, text, invalid, &mut seen)?;
        check_source(m, text, invalid)?;
        engine_flags(m, text, invalid)?;
        if let Some(p) = &m.preempt
            && *p.get_ref()
            && m.external().is_some()
        {
            return Err(invalid(format!(
                "line {}: key `preempt`: only Aula's own engine pauses sequences \
                 (a `gguf` model, or a `url` one that is an `aula engine`)",
                line_of(text, p.span().start)
            )));
        }
        if let Some(t) = &m.chat_template_file
            && (m.gguf.is_none() || m.external().is_some())
        {
            return Err(invalid(format!(
                "line {}: key `chat_template_file` is for embedded (`gguf`) models; \
                 llama-server and vLLM take `--chat-template` in `extra_args`",
                line_of(text, t.span().start)
            )));
        }
    }
    for m in models {
        check_engine(m, text, invalid)?;
        check_keeping(m, text, invalid)?;
    }
    Ok(())
}

/// Names and aliases: usable, and unique across both.
fn check_names<'a>(
    m: &'a ModelEntry,
    text: &str,
    invalid: Invalid,
    seen: &mut Vec<(&'a str, usize)>,
) -> Result<(), ConfigError> {
    let line = line_of(text, m.name.span().start);
    let name = m.name.get_ref().as_str();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "line {line}: key `name`: model names must be non-empty and contain no spaces"
        )));
    }
    if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
        return Err(invalid(format!(
            "line {line}: key `name`: the model name `{name}` is already used on line {first}; names must be unique"
        )));
    }
    seen.push((name, line));
    for a in &m.aliases {
        if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!(
                "line {line}: key `aliases`: `{a}` is not a usable model name"
            )));
        }
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == a.as_str()) {
            return Err(invalid(format!(
                "line {line}: key `aliases`: `{a}` is already a model name or alias on line {first}"
            )));
        }
        seen.push((a.as_str(), line));
    }
    Ok(())
}

/// The `aula engine` flags of an embedded model's GPU keys, checked: each
/// error names its key and line.
pub(super) fn engine_flags(
    m: &ModelEntry,
    text: &str,
    invalid: Invalid,
) -> Result<EngineFlags, ConfigError> {
    let mut flags = EngineFlags::default();
    let bad = |key: &str, span: std::ops::Range<usize>, want: &str| {
        invalid(format!(
            "line {}: key `{key}`: use {want}",
            line_of(text, span.start)
        ))
    };
    if let Some(g) = &m.gpu_layers {
        flags.gpu_layers = Some(match g.get_ref() {
            toml::Value::Integer(n) if (0..=i64::from(u32::MAX)).contains(n) => {
                GpuLayers::Count(*n as u32)
            }
            toml::Value::String(s) if s == "all" => GpuLayers::All,
            _ => return Err(bad("gpu_layers", g.span(), "a number of layers or \"all\"")),
        });
    }
    if let Some(d) = &m.device {
        let v = d.get_ref().trim();
        if v.is_empty()
            || v.chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == ',' || c == '_'))
        {
            return Err(bad(
                "device",
                d.span(),
                "device names such as \"CUDA0\" or \"Vulkan0\" (aula doctor lists them)",
            ));
        }
        flags.device = Some(v.to_string());
    }
    if let Some(f) = &m.flash_attn {
        if !matches!(f.get_ref().as_str(), "on" | "off" | "auto") {
            return Err(bad("flash_attn", f.span(), "\"on\", \"off\" or \"auto\""));
        }
        flags.flash_attn = Some(f.get_ref().clone());
    }
    for (key, v, slot) in [
        ("cache_type_k", &m.cache_type_k, &mut flags.cache_type_k),
        ("cache_type_v", &m.cache_type_v, &mut flags.cache_type_v),
    ] {
        if let Some(t) = v {
            *slot =
                Some(KvType::parse(t.get_ref()).ok_or_else(|| {
                    bad(key, t.span(), "\"f16\", \"bf16\", \"q8_0\" or \"q4_0\"")
                })?);
        }
    }
    if flags != EngineFlags::default() && m.gguf.is_none() {
        let span = m
            .gpu_layers
            .as_ref()
            .map(|s| s.span())
            .or(m.device.as_ref().map(|s| s.span()))
            .or(m.flash_attn.as_ref().map(|s| s.span()))
            .or(m.cache_type_k.as_ref().map(|s| s.span()))
            .or(m.cache_type_v.as_ref().map(|s| s.span()))
            .unwrap_or(0..0);
        return Err(invalid(format!(
            "line {}: gpu_layers, device, flash_attn and cache_type_k/_v are for embedded (`gguf`) models; \
             give other engines their flags in `extra_args`",
            line_of(text, span.start)
        )));
    }
    Ok(flags)
}

/// `gguf`, `url` or `model`, and the numbers that go with them.
fn check_source(m: &ModelEntry, text: &str, invalid: Invalid) -> Result<(), ConfigError> {
    let line = line_of(text, m.name.span().start);
    let name = m.name.get_ref().as_str();
    match (&m.gguf, &m.url) {
        (Some(_), Some(u)) => {
            return Err(invalid(format!(
                "line {}: key `url`: model `{name}` has both `gguf` and `url`; give one",
                line_of(text, u.span().start)
            )));
        }
        (_, None) if m.api_key_env.is_some() => {
            return Err(invalid(format!(
                "line {line}: key `api_key_env`: only `url` models take a key (model `{name}`)"
            )));
        }
        (None, None) if m.model.is_none() => {
            return Err(invalid(format!(
                "line {line}: model `{name}` needs `gguf` (a model file) or `url` (a running server)"
            )));
        }
        (None, None) => {}
        (None, Some(u)) => {
            let urls = u.get_ref().list();
            if urls.is_empty() {
                return Err(invalid(format!(
                    "line {}: key `url`: give at least one URL",
                    line_of(text, u.span().start)
                )));
            }
            for url in urls {
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                    return Err(invalid(format!(
                        "line {}: key `url`: `{url}` is not an http:// or https:// URL",
                        line_of(text, u.span().start)
                    )));
                }
                if url.starts_with("https://") {
                    return Err(invalid(format!(
                        "line {}: key `url`: https engines are not supported yet; put the engine on http (loopback or a private network)",
                        line_of(text, u.span().start)
                    )));
                }
            }
            for (key, v) in [
                ("context", m.context.as_ref().map(|s| s.span())),
                ("threads", m.threads.as_ref().map(|s| s.span())),
            ] {
                if let Some(span) = v {
                    return Err(invalid(format!(
                        "line {}: key `{key}`: only embedded (`gguf`) models take `{key}`; a `url` server is configured by whoever runs it",
                        line_of(text, span.start)
                    )));
                }
            }
        }
        (Some(_), None) => {}
    }
    for (key, v) in [
        (
            "parallel",
            m.parallel.as_ref().map(|s| (*s.get_ref(), s.span())),
        ),
        (
            "threads",
            m.threads.as_ref().map(|s| (*s.get_ref(), s.span())),
        ),
    ] {
        if let Some((0, span)) = v {
            return Err(invalid(format!(
                "line {}: key `{key}` must be at least 1",
                line_of(text, span.start)
            )));
        }
    }
    if let Some(c) = &m.context
        && *c.get_ref() < 16
    {
        return Err(invalid(format!(
            "line {}: key `context` must be at least 16 tokens",
            line_of(text, c.span().start)
        )));
    }
    Ok(())
}

/// `engine` and what it needs.
fn check_engine(m: &ModelEntry, text: &str, invalid: Invalid) -> Result<(), ConfigError> {
    let Some(e) = &m.engine else {
        if m.model.is_some() {
            return Err(invalid(format!(
                "line {}: `model` is for engine = \"vllm\" or \"sglang\"; say which",
                line_of(text, m.name.span().start)
            )));
        }
        return Ok(());
    };
    let line = line_of(text, e.span().start);
    let kind = m
        .engine()
        .map_err(|why| invalid(format!("line {line}: {why}")))?;
    match kind {
        Some(EngineKind::Embedded | EngineKind::LlamaServer) if m.gguf.is_none() => {
            Err(invalid(format!(
                "line {line}: engine `{}` needs `gguf` (the model file)",
                e.get_ref()
            )))
        }
        Some(EngineKind::Vllm | EngineKind::Sglang)
            if m.model.is_none() || m.gguf.is_some() || m.url.is_some() =>
        {
            Err(invalid(format!(
                "line {line}: engine `{}` needs `model` (a Hugging Face model directory or id), not `gguf` or `url`",
                e.get_ref()
            )))
        }
        _ => Ok(()),
    }
}

/// `replicas`, `keep_alive`, `pinned`, `preload`.
fn check_keeping(m: &ModelEntry, text: &str, invalid: Invalid) -> Result<(), ConfigError> {
    if let Some(r) = &m.replicas {
        let line = line_of(text, r.span().start);
        if *r.get_ref() == 0 {
            return Err(invalid(format!(
                "line {line}: key `replicas` must be at least 1"
            )));
        }
        if m.url.is_some() {
            return Err(invalid(format!(
                "line {line}: key `replicas`: for a `url` model, list every replica's URL in `url`"
            )));
        }
    }
    if let Some(k) = &m.keep_alive
        && parse_duration(k.get_ref()).is_none()
    {
        return Err(invalid(format!(
            "line {}: key `keep_alive`: `{}` is not a duration (30s, 10m, 2h)",
            line_of(text, k.span().start),
            k.get_ref()
        )));
    }
    if m.url.is_some() && (m.pinned.is_some() || m.keep_alive.is_some() || m.preload.is_some()) {
        return Err(invalid(format!(
            "line {}: `pinned`, `preload` and `keep_alive` are for models Aula starts (`gguf`), not `url` servers",
            line_of(text, m.name.span().start)
        )));
    }
    Ok(())
}

impl ModelEntry {
    /// The fleet's spec of this (checked) entry; relative paths are in `models_dir`.
    pub fn spec(&self, models_dir: &Path) -> ModelSpec {
        let m = self;
        let external = m.external();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                models_dir.join(p)
            }
        };
        let source = match (&m.gguf, &m.url) {
            _ if external.is_some() => ModelSource::External {
                kind: external.unwrap_or(EngineKind::Vllm),
                model: match (&m.gguf, &m.model) {
                    (Some(g), _) => resolve(g.get_ref()).display().to_string(),
                    (None, Some(md)) => {
                        let p = Path::new(md.get_ref());
                        if models_dir.join(p).exists() {
                            models_dir.join(p).display().to_string()
                        } else {
                            md.get_ref().clone()
                        }
                    }
                    (None, None) => String::new(),
                },
                command: m.command.as_ref().map(|c| c.get_ref().clone()),
                parallel: m.parallel.as_ref().map(|s| *s.get_ref()),
                context: m.context.as_ref().map(|s| *s.get_ref()),
                extra_args: m.extra_args.clone(),
                precision: m.precision.as_ref().map(|p| p.get_ref().clone()),
                // Set by the gateway when fine-tuning serves models on it.
                lora_dir: None,
                plan_as: m.plan_as.as_ref().map(|p| p.get_ref().clone()),
            },
            (Some(g), _) => {
                let p = g.get_ref();
                let gguf = if p.is_absolute() {
                    p.clone()
                } else {
                    models_dir.join(p)
                };
                ModelSource::Embedded {
                    facts: aula_fleet::spec::ModelFacts::read(&gguf),
                    gguf,
                    parallel: m.parallel.as_ref().map(|s| *s.get_ref()),
                    context: m.context.as_ref().map(|s| *s.get_ref()),
                    threads: m.threads.as_ref().map(|s| *s.get_ref()),
                    // Checked when the file was parsed (`engine_flags` in `check`).
                    flags: EngineFlags {
                        no_preempt: m.preempt.as_ref().is_some_and(|p| !*p.get_ref()),
                        chat_template_file: m
                            .chat_template_file
                            .as_ref()
                            .map(|t| resolve(t.get_ref())),
                        ..engine_flags(m, "", &|e| ConfigError::Invalid {
                            path: String::new(),
                            message: e,
                        })
                        .unwrap_or_default()
                    },
                }
            }
            (None, Some(u)) => ModelSource::Url {
                bases: u
                    .get_ref()
                    .list()
                    .into_iter()
                    .map(|b| normalize_base(b))
                    .collect(),
                upstream_model: m.upstream_model.clone(),
                parallel: m.parallel.as_ref().map(|s| *s.get_ref()),
                key_env: m.api_key_env.as_ref().map(|v| v.get_ref().clone()),
            },
            (None, None) => ModelSource::Url {
                bases: Vec::new(),
                upstream_model: None,
                parallel: None,
                key_env: None,
            },
        };
        let preempt = match &m.preempt {
            Some(p) => *p.get_ref() && external.is_none(),
            None => matches!(source, ModelSource::Embedded { .. }),
        };
        ModelSpec {
            preempt,
            name: m.name.get_ref().clone(),
            aliases: m.aliases.clone(),
            replicas: m.replicas.as_ref().map(|r| *r.get_ref()).unwrap_or(1),
            source,
            pinned: m.pinned.unwrap_or(false),
            preload: m.preload.unwrap_or(true),
            keep_alive: m
                .keep_alive
                .as_ref()
                .and_then(|k| parse_duration(k.get_ref())),
        }
    }
}

/// Every GGUF in the model directory, each an embedded model named after its file.
pub(super) fn discover(models_dir: &Path) -> Result<Vec<ModelSpec>, String> {
    let entries = std::fs::read_dir(models_dir).map_err(|e| {
        format!(
            "cannot read the model directory {}: {e}; run the set-up (see README) or pass --config",
            models_dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    files.sort_by_key(|p| super::name_for_file(p));
    if files.is_empty() {
        return Err(format!(
            "no .gguf model in {}; run the set-up (see README) or pass --config",
            models_dir.display()
        ));
    }
    Ok(files
        .into_iter()
        .map(|gguf| ModelSpec {
            name: super::name_for_file(&gguf),
            aliases: Vec::new(),
            replicas: 1,
            source: ModelSource::Embedded {
                facts: aula_fleet::spec::ModelFacts::read(&gguf),
                gguf,
                parallel: None,
                context: None,
                threads: None,
                flags: Default::default(),
            },
            pinned: false,
            preload: true,
            keep_alive: None,
            preempt: true,
        })
        .collect())
}
