//! How an engine is sized and started. The planner decides an engine's
//! settings (context, slots, memory share) as data; [`planned_args`] alone
//! turns them into the engine's arguments, both for the engines Aula starts
//! and for what `aula plan` shows; [`Launch`] alone builds a command line.

use aula_planner::EngineKind;
use aula_planner::placement::{Settings, planned_args};
use std::path::{Path, PathBuf};

/// Slots Aula gives a `url` engine whose entry sets no `parallel`.
pub const URL_DEFAULT_SLOTS: usize = 16;
/// Slots of an embedded engine whose entry sets no `parallel` (`aula engine`'s default).
pub const EMBEDDED_DEFAULT_SLOTS: usize = 4;
/// Most sequences an embedded embedding model batches together
/// (`aula engine` uses 16 x `parallel`, at most this many).
pub const EMBEDDING_MAX_SLOTS: usize = 64;

/// How one engine process is started.
#[derive(Debug, Clone, PartialEq)]
pub enum Launch {
    /// `aula engine` on a GGUF, on a socket Aula binds.
    Embedded {
        gguf: PathBuf,
        parallel: Option<usize>,
        context: Option<u32>,
        threads: Option<usize>,
        flags: crate::spec::EngineFlags,
    },
    /// Another engine's program and arguments; `{port}` is replaced by the
    /// port Aula picked, `{api_key}` by the engine's key.
    External { program: String, args: Vec<String> },
}

impl Launch {
    /// The arguments of `aula engine` for this engine (`--listen-fd` or
    /// `--host/--port` are added by the supervisor).
    pub fn embedded_args(&self, name: &str) -> Vec<String> {
        let Launch::Embedded {
            gguf,
            parallel,
            context,
            threads,
            flags,
        } = self
        else {
            return Vec::new();
        };
        let mut a = vec![
            "engine".to_string(),
            "--model".into(),
            gguf.display().to_string(),
            "--name".into(),
            name.to_string(),
        ];
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(flag.to_string());
                a.push(v);
            }
        };
        opt("--parallel", parallel.map(|p| p.to_string()));
        opt("--context", context.map(|c| c.to_string()));
        opt("--threads", threads.map(|t| t.to_string()));
        a.extend(flags.args());
        a
    }
}

impl crate::spec::EngineFlags {
    /// The flags of `aula engine` these settings are (the only place they
    /// become strings).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(flag.to_string());
                a.push(v);
            }
        };
        opt(
            "--gpu-layers",
            self.gpu_layers.map(|g| match g {
                crate::spec::GpuLayers::All => "all".to_string(),
                crate::spec::GpuLayers::Count(n) => n.to_string(),
            }),
        );
        opt("--device", self.device.clone());
        opt("--flash-attn", self.flash_attn.clone());
        opt(
            "--cache-type-k",
            self.cache_type_k.map(|k| k.as_str().into()),
        );
        opt(
            "--cache-type-v",
            self.cache_type_v.map(|k| k.as_str().into()),
        );
        opt(
            "--chat-template-file",
            self.chat_template_file
                .as_ref()
                .map(|p| p.display().to_string()),
        );
        opt(
            "--lora-dir",
            self.lora_dir.as_ref().map(|p| p.display().to_string()),
        );
        if self.no_preempt {
            a.push("--no-preempt".into());
        }
        a
    }
}

/// The slots (requests at once) of an embedded engine: for an embedding
/// model, the sequences its engine batches together.
pub fn embedded_slots(facts: crate::spec::ModelFacts, parallel: Option<usize>) -> usize {
    let p = parallel.unwrap_or(EMBEDDED_DEFAULT_SLOTS);
    if facts.embedding {
        (p * 16).clamp(1, EMBEDDING_MAX_SLOTS)
    } else {
        p
    }
}

/// Bytes per KV cache element for the engine's KV cache types (f16 where
/// not given): the mean of the two types.
pub fn kv_bytes_per_elem(flags: &crate::spec::EngineFlags) -> f64 {
    let of = |t: Option<crate::spec::KvType>| {
        t.and_then(|t| aula_planner::ggml::GgmlType::from_name(t.as_str()))
            .map_or(2.0, |t| t.bits_per_weight() / 8.0)
    };
    (of(flags.cache_type_k) + of(flags.cache_type_v)) / 2.0
}

/// What the planner says an embedded model will allocate at its settings
/// (the file's size when its header cannot be read: the engine will say why).
pub fn planned_bytes(gguf: &Path, context: Option<u32>, parallel: Option<usize>) -> u64 {
    planned_bytes_with(gguf, context, parallel, &Default::default())
}

/// [`planned_bytes`] with the engine's flags (its KV cache types).
pub fn planned_bytes_with(
    gguf: &Path,
    context: Option<u32>,
    parallel: Option<usize>,
    flags: &crate::spec::EngineFlags,
) -> u64 {
    let plan = || -> Result<u64, String> {
        let file = aula_planner::gguf::GgufFile::open(gguf).map_err(|e| e.to_string())?;
        let shape = aula_planner::shape::ModelShape::from_gguf("model", &file)?;
        let trained = if shape.max_context > 0 {
            shape.max_context
        } else {
            4096
        };
        let settings = aula_planner::llamacpp::EngineSettings {
            context: context.unwrap_or(trained.min(4096)),
            parallel: parallel.unwrap_or(EMBEDDED_DEFAULT_SLOTS) as u32,
            kv_bytes_per_elem: kv_bytes_per_elem(flags),
            ..Default::default()
        };
        Ok(aula_planner::llamacpp::memory(&shape, &settings).total_bytes)
    };
    plan().unwrap_or_else(|e| {
        tracing::warn!("cannot plan {}: {e}", gguf.display());
        std::fs::metadata(gguf).map(|m| m.len()).unwrap_or(0)
    })
}

/// The planned size of an external engine and its settings (for vLLM and
/// SGLang with their share of the device).
pub fn plan_external(
    kind: EngineKind,
    model: &str,
    precision: Option<&str>,
    plan_as: Option<&str>,
    context: u32,
    slots: usize,
    device_bytes: u64,
) -> Result<(u64, Settings), String> {
    use aula_planner::estimate::{PlanRequest, Precision};
    let mut settings = Settings {
        context,
        slots: slots as u32,
        share: None,
    };
    if kind == EngineKind::LlamaServer {
        let bytes = planned_bytes(Path::new(model), Some(context), Some(slots));
        return Ok((bytes, settings));
    }
    let local = Path::new(model).join("config.json");
    let shape = if let Some(id) = plan_as {
        aula_planner::catalog::find(id)?
    } else if local.exists() {
        aula_planner::hf::read(&local)?
    } else {
        return Err(format!(
            "cannot plan `{model}`: there is no {} ; set `plan_as` to a catalog id (see `aula plan --list`)",
            local.display()
        ));
    };
    // A pre-quantized checkpoint's shape carries its files' size; others are
    // sized at `precision`, or when it is unset at the precision the model
    // was released in (gpt-oss: MXFP4), else bf16.
    let precision = Precision::parse(precision.or(shape.released_as.as_deref()).unwrap_or("bf16"))?;
    let mut hw = crate::host::detect();
    hw.usable_gb = device_bytes as f64 / 1e9;
    hw.memory_gb = hw.memory_gb.max(hw.usable_gb);
    let want = aula_planner::placement::Want {
        shape,
        request: PlanRequest {
            engine: kind,
            precision,
            context,
            users: slots as u32,
            ..Default::default()
        },
    };
    let p = aula_planner::placement::place(&[want], &hw);
    let bytes = p.models.first().map(|m| m.bytes).unwrap_or(0);
    let share = (bytes as f64 / device_bytes.max(1) as f64 * 100.0).ceil() / 100.0;
    settings.share = Some(share.min(1.0));
    Ok((bytes, settings))
}

/// The program an external engine runs when its entry names no `command`.
pub fn default_program(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::LlamaServer => "llama-server",
        EngineKind::Sglang => "python3 -m sglang.launch_server",
        // vLLM (the default of an entry with `model`).
        _ => "vllm",
    }
}

/// The launch of an external engine: its program, where it listens and what
/// it calls the model, the planned arguments, then the entry's `extra_args`.
pub fn external(
    kind: EngineKind,
    name: &str,
    model: &str,
    command: Option<String>,
    settings: &Settings,
    extra: Vec<String>,
) -> Launch {
    let s = |x: &str| x.to_string();
    let (model_flag, name_flag) = match kind {
        EngineKind::LlamaServer => (Some("-m"), "--alias"),
        EngineKind::Sglang => (Some("--model-path"), "--served-model-name"),
        // vLLM (the default of an entry with `model`).
        _ => (None, "--served-model-name"),
    };
    let mut args = Vec::new();
    match model_flag {
        None => args.extend([s("serve"), s(model)]),
        Some(f) => args.extend([s(f), s(model)]),
    }
    args.extend([
        s("--host"),
        s("127.0.0.1"),
        s("--port"),
        s("{port}"),
        s(name_flag),
        s(name),
    ]);
    args.extend(planned_args(kind, settings));
    args.extend(extra);
    Launch::External {
        program: command.unwrap_or_else(|| default_program(kind).to_string()),
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedded engine's KV cache types (config's `cache_type_k/v`) size
    /// its KV cache in the plan; f16 where not given.
    #[test]
    fn kv_cache_types_size_the_plan() {
        use crate::spec::{EngineFlags, GpuLayers, KvType};
        let kv = |k, v| EngineFlags {
            cache_type_k: k,
            cache_type_v: v,
            ..Default::default()
        };
        assert_eq!(kv_bytes_per_elem(&EngineFlags::default()), 2.0);
        let gpu = EngineFlags {
            gpu_layers: Some(GpuLayers::All),
            ..Default::default()
        };
        assert_eq!(kv_bytes_per_elem(&gpu), 2.0);
        let q8 = 34.0 / 32.0;
        assert_eq!(
            kv_bytes_per_elem(&kv(Some(KvType::Q8_0), Some(KvType::Q8_0))),
            q8
        );
        assert_eq!(
            kv_bytes_per_elem(&kv(Some(KvType::Q8_0), None)),
            (q8 + 2.0) / 2.0
        );
        assert_eq!(
            kv_bytes_per_elem(&kv(Some(KvType::Bf16), Some(KvType::Q4_0))),
            (18.0 / 32.0 + 2.0) / 2.0
        );
    }

    /// Engine flags become `aula engine`'s arguments here and only here.
    #[test]
    fn engine_flags_are_written_as_aula_engine_flags() {
        use crate::spec::{EngineFlags, GpuLayers, KvType};
        let f = EngineFlags {
            gpu_layers: Some(GpuLayers::Count(12)),
            device: Some("CUDA0".into()),
            flash_attn: Some("on".into()),
            cache_type_k: Some(KvType::Q8_0),
            cache_type_v: None,
            chat_template_file: Some("/m/t.jinja".into()),
            lora_dir: Some("/a/smol".into()),
            no_preempt: true,
        };
        assert_eq!(
            f.args(),
            [
                "--gpu-layers",
                "12",
                "--device",
                "CUDA0",
                "--flash-attn",
                "on",
                "--cache-type-k",
                "q8_0",
                "--chat-template-file",
                "/m/t.jinja",
                "--lora-dir",
                "/a/smol",
                "--no-preempt"
            ]
        );
        assert!(EngineFlags::default().args().is_empty());
        for k in KvType::ALL {
            assert_eq!(KvType::parse(k.as_str()), Some(k));
        }
    }

    /// A vLLM engine for gpt-oss-120b with no `precision` is planned as
    /// released (MXFP4 experts, about 65 GB of weights), not at BF16.
    #[test]
    fn external_engines_default_to_the_released_precision() {
        let device = 119_600_000_000;
        let plan = |precision| {
            plan_external(
                EngineKind::Vllm,
                "openai/gpt-oss-120b",
                precision,
                Some("gpt-oss-120b"),
                8192,
                16,
                device,
            )
        };
        let Ok((bytes, settings)) = plan(None) else {
            panic!("gpt-oss-120b could not be planned");
        };
        assert!(bytes > 65_000_000_000 && bytes < device, "{bytes}");
        let share = settings.share.unwrap_or(0.0);
        assert!(share > 0.5 && share < 1.0, "{share}");
        let Ok((bf16, _)) = plan(Some("bf16")) else {
            panic!("gpt-oss-120b at bf16 could not be planned");
        };
        assert!(bf16 > bytes, "{bf16} vs {bytes}");
    }

    /// What `aula plan` shows is what the supervisor runs.
    #[test]
    fn plan_and_launch_share_the_arguments() {
        let s = Settings {
            context: 8192,
            slots: 16,
            share: Some(0.42),
        };
        let Launch::External { program, args } =
            external(EngineKind::Vllm, "m", "org/m", None, &s, vec!["--x".into()])
        else {
            panic!("not external");
        };
        assert_eq!(program, "vllm");
        let shown = aula_planner::placement::display_settings(EngineKind::Vllm, &s);
        assert_eq!(
            shown,
            "vllm serve --max-model-len 8192 --max-num-seqs 16 --gpu-memory-utilization 0.42"
        );
        let tail = args[args.len() - 7..args.len() - 1].join(" ");
        assert!(shown.ends_with(&tail), "{shown} / {tail}");
        assert_eq!(args.last().map(String::as_str), Some("--x"));
        let Launch::External { args, .. } = external(
            EngineKind::LlamaServer,
            "m",
            "/m.gguf",
            None,
            &Settings {
                context: 4096,
                slots: 4,
                share: None,
            },
            vec![],
        ) else {
            panic!("not external");
        };
        assert_eq!(
            args.join(" "),
            "-m /m.gguf --host 127.0.0.1 --port {port} --alias m -c 16384 -np 4 -ngl 999"
        );
    }
}
