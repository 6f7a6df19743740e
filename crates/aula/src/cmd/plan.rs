//! `aula plan`: will these models fit this machine, how fast, with which
//! settings — one [`PlanSummary`], printed as text or JSON.

use super::{json, print};
use crate::cli::PlanArgs;
use anyhow::{Context, anyhow, bail};
use aula_planner::estimate::{EngineKind, PlanRequest, Precision};
use aula_planner::query::PlanQuery;
use aula_planner::summary::{FinetunePlan, OffloadPlan, PlanSummary};

pub fn plan(a: PlanArgs) -> anyhow::Result<()> {
    if a.explain {
        print(&aula_planner::summary::formulas_text());
        if a.models.is_empty() {
            return Ok(());
        }
    }
    if a.list {
        print(&aula_planner::summary::listing_text().map_err(|e| anyhow!(e))?);
        return Ok(());
    }
    if a.context == 0 || a.users == 0 || a.batch == 0 {
        bail!("--context, --users and --batch must be at least 1");
    }
    if !(a.gpu_memory_utilization > 0.0 && a.gpu_memory_utilization <= 1.0) {
        bail!("--gpu-memory-utilization must be in (0, 1]");
    }
    let hw = if a.detect {
        aula_fleet::host::detect()
    } else if a.hardware.eq_ignore_ascii_case("this") {
        super::assess::load()?
            .ok_or_else(|| {
                anyhow!(
                    "this machine has not been assessed: run `aula assess` first (or plan with --detect: memory only, no speeds)"
                )
            })?
            .hardware()
    } else {
        aula_planner::hardware::find(&a.hardware).map_err(|e| anyhow!(e))?
    };
    let engine: EngineKind = a.engine.parse().map_err(|e: String| anyhow!(e))?;
    if let Some(file) = &a.report {
        let mut rows = match (hw.id.as_str(), super::assess::load()?) {
            ("this", Some(x)) => {
                aula_planner::report::assessed_rows(&x.models, &hw, engine, a.context, a.users)
            }
            _ => Vec::new(),
        };
        rows.extend(
            aula_planner::report::rows(&hw, engine, a.context, a.users).map_err(|e| anyhow!(e))?,
        );
        let html = file.extension().is_some_and(|x| x == "html" || x == "htm");
        if html {
            let page = aula_planner::report::html(&rows, &hw, engine, a.context, a.users);
            std::fs::write(file, page)
                .with_context(|| format!("cannot write {}", file.display()))?;
        } else {
            let svg_path = file.with_extension("svg");
            let svg_name = svg_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "chart.svg".into());
            std::fs::write(&svg_path, aula_planner::report::svg(&rows, &hw))
                .with_context(|| format!("cannot write {}", svg_path.display()))?;
            let md =
                aula_planner::report::markdown(&rows, &hw, engine, a.context, a.users, &svg_name);
            std::fs::write(file, md).with_context(|| format!("cannot write {}", file.display()))?;
        }
        print(&format!(
            "wrote {} ({} models on {})\n",
            file.display(),
            rows.len(),
            hw.name
        ));
        return Ok(());
    }
    let precision =
        Precision::parse(a.precision.as_deref().unwrap_or("f16")).map_err(|e| anyhow!(e))?;
    let kv_bytes = match a.kv_cache.to_ascii_lowercase().as_str() {
        "fp8" | "fp8_e4m3" | "fp8_e5m2" => 1.0,
        other => aula_planner::ggml::GgmlType::from_name(other)
            .map(|t| t.bits_per_weight() / 8.0)
            .ok_or_else(|| {
                anyhow!("unknown --kv-cache `{other}`; use f16, bf16, fp8, q8_0 or q4_0")
            })?,
    };
    if let Some(g) = &a.llama_cpp_generation {
        let known = &aula_planner::decode::catalog()
            .map_err(|e| anyhow!(e))?
            .generation;
        if !known.iter().any(|k| &k.id == g) {
            let ids: Vec<&str> = known.iter().map(|k| k.id.as_str()).collect();
            bail!(
                "--llama-cpp-generation: unknown generation `{g}`; known: {}",
                ids.join(", ")
            );
        }
    }
    let request = PlanRequest {
        engine,
        precision: precision.clone(),
        context: a.context,
        users: a.users,
        n_ubatch: a.batch,
        gpu_memory_utilization: a.gpu_memory_utilization,
        prompt_tokens: a.prompt_tokens,
        max_num_batched_tokens: a.max_num_batched_tokens,
        kv_bytes_per_elem: kv_bytes,
        engine_version: a.engine_version,
        draft: match &a.draft {
            Some(d) => Some(aula_planner::estimate::Draft::model(
                &aula_planner::resolve_model(d).map_err(|e| anyhow!("--draft: {e}"))?,
                &precision,
                kv_bytes,
            )),
            None => None,
        },
        llama_cpp_generation: a.llama_cpp_generation.clone(),
    };
    let mut wants = Vec::new();
    for path in &a.models {
        let shape = aula_planner::resolve_model(path).map_err(|e| anyhow!(e))?;
        let query = PlanQuery {
            request: request.clone(),
            precision: a.precision.clone(),
        };
        let mut request = query.resolve(&shape).map_err(|e| anyhow!(e))?;
        if let Some(n) = a.draft_layers {
            request.draft = Some(aula_planner::estimate::Draft::layers(
                &shape, n, &precision, kv_bytes,
            ));
        }
        wants.push(aula_planner::placement::Want { shape, request });
    }
    if let Some(n) = a.students {
        return students(&a, &wants, &hw, n);
    }
    let mut estimates: Vec<_> = wants
        .iter()
        .map(|w| aula_planner::estimate::estimate(&w.shape, &hw, &w.request))
        .collect();
    // A model this machine's assessment ran: its measured speeds.
    let assessed = match hw.id.as_str() {
        "this" => super::assess::load()?,
        _ => None,
    };
    if let Some(x) = assessed {
        for (e, w) in estimates.iter_mut().zip(&wants) {
            let m = x.models.iter().find(|m| m.name == w.shape.id);
            if let (Some(m), Some(speed)) = (m, e.speed.as_mut()) {
                m.apply(speed, w.request.users, w.request.prompt_tokens);
            }
        }
    }
    let placement = (wants.len() > 1).then(|| aula_planner::placement::place(&wants, &hw));
    let finetune = a.finetune.then(|| {
        wants
            .iter()
            .map(|w| FinetunePlan {
                model: w.shape.id.clone(),
                train_tokens: a.train_tokens,
                lora_rank: a.lora_rank,
                estimates: aula_planner::finetune::all(&w.shape, &hw, a.train_tokens, a.lora_rank),
                aula_trainer: aula_planner::summary::AulaTrainerPlan::new(
                    &w.shape,
                    a.lora_rank,
                    a.train_tokens,
                ),
            })
            .collect()
    });
    let offload = match &a.gpu_layers {
        None => None,
        Some(g) => {
            if !engine.is_llama_cpp() {
                bail!("--gpu-layers is llama.cpp's -ngl: for --engine embedded or llama-server");
            }
            let mut out = Vec::new();
            for w in &wants {
                let s = aula_planner::llamacpp::EngineSettings {
                    context: a.context,
                    parallel: a.users,
                    n_ubatch: a.batch,
                    kv_bytes_per_elem: kv_bytes,
                };
                // Weights at the precision asked for, where the shape has
                // no tensor table of its own (a catalog model).
                let mut shape = w.shape.clone();
                if shape.weight_bytes.is_none() {
                    let wb = aula_planner::estimate::weights(&shape, &w.request.precision, engine);
                    shape.weight_bytes = Some(wb.total);
                }
                let most =
                    aula_planner::offload::most_layers_that_fit(&shape, &s, hw.usable_bytes());
                let n = match g.as_str() {
                    "all" => shape.n_layers + 1,
                    "fit" => most,
                    n => n.parse::<u32>().map_err(|_| {
                        anyhow!("--gpu-layers `{n}`: use a number of layers, `all` or `fit`")
                    })?,
                };
                let split = aula_planner::offload::split(&shape, &s, n);
                let fit = aula_planner::offload::fits(&split, &hw, None);
                out.push(OffloadPlan {
                    model: w.shape.id.clone(),
                    split,
                    fit,
                    most_gpu_layers_that_fit: most,
                });
            }
            Some(out)
        }
    };
    let summary = PlanSummary {
        hardware: hw,
        estimates,
        placement,
        finetune,
        offload,
        engine: a.engine.clone(),
        context: a.context,
        users: a.users,
    };
    print(&if a.json {
        json(&summary)?
    } else {
        summary.to_text()
    });
    Ok(())
}

/// `--students`: the largest class the models hold at the target, from the
/// assessment's measurements where this machine measured the model, else
/// from the formulas (`aula_planner::class` states the rules).
fn students(
    a: &PlanArgs,
    wants: &[aula_planner::placement::Want],
    hw: &aula_planner::hardware::Hardware,
    n: u32,
) -> anyhow::Result<()> {
    use aula_planner::class::{Class, Engine, Target, capacity, simulate};
    let seconds = |flag: &str, v: &str| -> anyhow::Result<f64> {
        Ok(super::parse_duration(v)
            .with_context(|| format!("--{flag}"))?
            .as_secs_f64())
    };
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        bail!("--rate must be a number of tokens per second, 0 or more");
    }
    let target = Target {
        rate_tps: a.rate,
        ttft_p95_s: seconds("ttft", &a.ttft)?,
    };
    let class = Class {
        students: n,
        think_s: seconds("think", &a.think)?,
        prompt_tokens: a.prompt_tokens,
        answer_tokens: a.answer_tokens,
    };
    class.check().map_err(|e| anyhow!("--students: {e}"))?;
    if a.users > 65_536 {
        bail!(
            "--users (slots): at most 65536 with --students (got {})",
            a.users
        );
    }
    let assessed = if hw.id == "this" {
        super::assess::load()?
    } else {
        None
    };
    let mut engines = Vec::new();
    for w in wants {
        let measured = assessed.as_ref().and_then(|x| {
            x.models
                .iter()
                .find(|m| m.name == w.shape.id)
                .and_then(|m| Engine::measured(m, a.users))
        });
        let engine = match measured {
            Some(e) => e,
            None => Engine::predicted(&w.shape, hw, &w.request).ok_or_else(|| {
                anyhow!(
                    "{}: {} has no speed figures to plan a class with (assess the machine, or name a catalog profile)",
                    w.shape.id,
                    hw.name
                )
            })?,
        };
        engines.push(engine);
    }
    let cap = capacity(&engines, &class, &target);
    let asked = (n > 0).then(|| simulate(&engines, &class));
    #[derive(serde::Serialize)]
    struct Students<'a> {
        hardware: &'a str,
        class: Class,
        target: Target,
        engines: &'a [Engine],
        capacity: &'a aula_planner::class::Capacity,
        asked: Option<aula_planner::class::Outcome>,
    }
    if a.json {
        print(&json(&Students {
            hardware: &hw.name,
            class,
            target,
            engines: &engines,
            capacity: &cap,
            asked,
        })?);
        return Ok(());
    }
    let mut s = format!(
        "Students on {}: each thinks {:.0} s on average, asks {} prompt tokens, reads {} answer tokens; target: the median answer at >= {:.1} tok/s and 95% of first tokens within {:.2} s.\n",
        hw.name,
        class.think_s,
        class.prompt_tokens,
        class.answer_tokens,
        target.rate_tps,
        target.ttft_p95_s
    );
    for (e, w) in engines.iter().zip(wants) {
        s.push_str(&format!(
            "  {} ({} slots): {}\n",
            e.model, e.slots, e.source
        ));
        let est = aula_planner::estimate::estimate(&w.shape, hw, &w.request);
        if est.verdict.kind != aula_planner::estimate::VerdictKind::Runs {
            s.push_str(&format!(
                "    but {} slots of {} tokens do not fit as asked: {}\n",
                w.request.users, w.request.context, est.verdict.reason
            ));
        }
    }
    if engines.len() > 1 {
        s.push_str("  students split evenly; the models take turns on the box\n");
    }
    let line = |o: &aula_planner::class::Outcome| {
        format!(
            "{} students: first token p50 {:.2} s, p95 {:.2} s; median answer {:.1} tok/s; {:.0} tok/s in all",
            o.students, o.ttft_p50_s, o.ttft_p95_s, o.rate_p50_tps, o.output_tps
        )
    };
    match (&cap.reason, &cap.at) {
        (Some(why), _) => s.push_str(&format!("holds no class at this target: {why}\n")),
        (None, Some(at)) => {
            s.push_str(&format!(
                "holds {} students.\n  {}\n",
                cap.students,
                line(at)
            ));
            match &cap.above {
                Some(o) => s.push_str(&format!("  {} (misses)\n", line(o))),
                None => s.push_str(&format!(
                    "  (the search stops at {})\n",
                    aula_planner::class::MAX_STUDENTS
                )),
            }
        }
        (None, None) => {}
    }
    if let Some(o) = &asked {
        s.push_str(&format!(
            "asked for {}: {} ({})\n",
            n,
            line(o),
            if o.meets(&target) {
                "meets the target"
            } else {
                "misses the target"
            }
        ));
    }
    s.push_str("How: aula_planner::class (a seeded simulation of the queue and continuous batching; `--explain` for the formulas behind predicted steps).\n");
    print(&s);
    Ok(())
}
