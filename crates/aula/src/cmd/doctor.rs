//! `aula doctor` (what llama.cpp chose on this CPU) and `aula home` (where
//! Aula keeps its files, and the models it found).

use crate::cli::DoctorArgs;
use aula_gateway::home;

/// Load llama.cpp's CPU backend as `aula engine` would, and say what it chose.
pub fn doctor(a: DoctorArgs) -> anyhow::Result<()> {
    let r = aula_engine::machine_report()?;
    let built: Vec<&str> = [
        ("cuda", cfg!(feature = "cuda")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("metal", cfg!(feature = "metal")),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n)
    .collect();
    let modules = aula_engine::cpu::gpu_modules();
    let devices = aula_engine::devices::devices();
    if a.json {
        let mut v = serde_json::to_value(r)?;
        v["gpu_backends_built"] = serde_json::json!(built);
        v["gpu_backend_modules"] = serde_json::json!(modules);
        v["device_details"] = serde_json::to_value(&devices)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "gpu backends: {}",
        if built.is_empty() {
            "none built in (CPU only; scripts/setup.sh builds CUDA or Vulkan where it finds a GPU)"
                .to_string()
        } else {
            format!("{} (modules: {})", built.join(", "), modules.join(", "))
        }
    );
    for d in &devices {
        println!(
            "device:      {} ({}, {}): {:.1} GB, {:.1} GB free",
            d.name,
            d.kind,
            d.description,
            d.memory_total_bytes as f64 / 1e9,
            d.memory_free_bytes as f64 / 1e9
        );
    }
    println!("cpu variant: {} ({})", r.variant, r.library);
    println!("features:    {}", r.features.join(" "));
    println!(
        "amx:         {}",
        match &r.amx {
            aula_engine::cpu::AmxState::NotListed => "not listed by this CPU".to_string(),
            aula_engine::cpu::AmxState::Works
                if r.features.iter().any(|f| f.starts_with("AMX")) =>
                "listed, probe passed: used".to_string(),
            aula_engine::cpu::AmxState::Works =>
                "listed, probe passed (not used by this variant)".to_string(),
            aula_engine::cpu::AmxState::ProbeFailed { reason } =>
                format!("listed, probe FAILED: not used ({reason})"),
            aula_engine::cpu::AmxState::Disabled { by } => format!("turned off by {by}"),
        }
    );
    println!("devices:     {}", r.devices.join(", "));
    if let Some(a) = &r.arm {
        println!(
            "arm:         this CPU has {} (the kernel's HWCAP, as ggml reads it)",
            if a.features.names().is_empty() {
                "none of DOTPROD FP16 SVE I8MM SVE2 SME".to_string()
            } else {
                a.features.names().join(" ")
            }
        );
        match &a.expected {
            Some((v, s)) if *v == r.variant => println!(
                "             ggml's rule (every feature a variant was built with, highest score) picks {v} (score {s}): in use"
            ),
            Some((v, s)) => println!(
                "             ggml's rule would pick {v} (score {s}), but {} is in use",
                r.variant
            ),
            None => println!("             no variant built here matches ggml's Arm list"),
        }
    }
    println!("variants:");
    for c in &r.candidates {
        let note = if c.variant == r.variant {
            "  <- in use".to_string()
        } else if let Some(s) = &c.skipped {
            format!("  ({s})")
        } else if c.score <= 0 {
            "  (needs instructions this CPU lacks)".to_string()
        } else {
            String::new()
        };
        println!("  {:<16} score {:>4}{note}", c.variant, c.score);
    }
    if let Some(h) = r.hint() {
        println!("hint: {h}");
    }
    Ok(())
}

pub fn show_home() -> anyhow::Result<()> {
    let h = home::aula_home();
    println!("data directory: {}", h.display());
    let dir = home::models_dir();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut files: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
                .collect();
            files.sort();
            println!("models ({}):", dir.display());
            for f in files {
                let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                let kind = if aula_fleet::spec::ModelFacts::read(&f).embedding {
                    "embedding"
                } else {
                    "chat"
                };
                println!(
                    "  {:<40} {:<9} {:>8.1} MiB  {}",
                    aula_gateway::config::name_for_file(&f),
                    kind,
                    size as f64 / 1048576.0,
                    f.display()
                );
            }
        }
        Err(_) => println!(
            "no model directory yet ({}); run the set-up in the README",
            dir.display()
        ),
    }
    Ok(())
}
