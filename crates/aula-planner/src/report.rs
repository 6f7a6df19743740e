//! "What can you actually run on this machine": the whole catalog on one
//! hardware profile, as Markdown (with the chart as an SVG file beside it)
//! or one self-contained HTML page, each formula spelled out once. On an
//! assessed machine the models `aula assess` ran come first, their speeds
//! measured; every other figure is predicted, and each row says which.
//! Each row also says how many students the model holds alone
//! ([`REPORT_CLASS`] at [`REPORT_TARGET`], by [`crate::class`]).

use crate::assessment::ModelFigures;
use crate::catalog;
use crate::class::{Class, Engine, Target, capacity};
use crate::estimate::{
    EngineKind, Estimate, FORMULAS, PlanRequest, Precision, VerdictKind, estimate,
};
use crate::hardware::Hardware;

pub struct Row {
    pub model: String,
    pub params: u64,
    pub embedding: bool,
    pub source: String,
    pub estimate: Estimate,
    /// Students the model holds alone ([`REPORT_CLASS`] at [`REPORT_TARGET`]),
    /// where it runs and its speed is known.
    pub students: Option<u32>,
}

/// The class each row's student count is for: 30 s of thought between
/// questions, 512-token questions, 256-token answers.
pub const REPORT_CLASS: Class = Class {
    students: 0,
    think_s: 30.0,
    prompt_tokens: 512,
    answer_tokens: 256,
};

/// What each of those students gets: answers at 10 tok/s, first tokens
/// within 2 s (95th percentile).
pub const REPORT_TARGET: Target = Target {
    rate_tps: 10.0,
    ttft_p95_s: 2.0,
};

fn students(engine: Option<Engine>, est: &Estimate) -> Option<u32> {
    if est.verdict.kind != VerdictKind::Runs {
        return None;
    }
    Some(capacity(&[engine?], &REPORT_CLASS, &REPORT_TARGET).students)
}

/// The models `aula assess` measured on this machine, each estimated from
/// its file (memory predicted) with its measured speeds. A model whose file
/// is gone is left out.
pub fn assessed_rows(
    models: &[ModelFigures],
    hw: &Hardware,
    engine: EngineKind,
    context: u32,
    users: u32,
) -> Vec<Row> {
    let mut out = Vec::new();
    for m in models {
        let Ok(shape) = crate::resolve_model(std::path::Path::new(&m.file)) else {
            continue;
        };
        let query = crate::query::PlanQuery {
            request: PlanRequest {
                engine,
                context: context.min(shape.max_context.max(1)),
                users,
                prompt_tokens: REPORT_CLASS.prompt_tokens,
                ..Default::default()
            },
            precision: None,
        };
        let Ok(req) = query.resolve(&shape) else {
            continue;
        };
        let mut estimate = estimate(&shape, hw, &req);
        if let Some(speed) = estimate.speed.as_mut() {
            m.apply(speed, req.users, req.prompt_tokens);
        }
        let students = students(Engine::measured(m, users), &estimate);
        out.push(Row {
            model: m.name.clone(),
            params: shape.params,
            embedding: false,
            source: format!("{} (measured by aula assess)", m.file),
            estimate,
            students,
        });
    }
    out
}

/// Each catalog model at the best precision that runs (f16, then q8_0, then
/// q4_k_m; a model released quantized, at its own precision first), for
/// `users` sequences of `context` tokens.
pub fn rows(
    hw: &Hardware,
    engine: EngineKind,
    context: u32,
    users: u32,
) -> Result<Vec<Row>, String> {
    let mut out = Vec::new();
    for e in catalog::entries()? {
        let shape = catalog::shape(&e);
        let mut chosen = None;
        let ladder = ["f16", "q8_0", "q4_k_m"];
        let tries: Vec<&str> = match &e.released_as {
            Some(p) => std::iter::once(p.as_str())
                .chain(ladder.iter().copied().skip(1))
                .collect(),
            None => ladder.to_vec(),
        };
        for p in tries {
            let req = PlanRequest {
                engine,
                precision: Precision::parse(p)?,
                context: context.min(shape.max_context.max(1)),
                users,
                prompt_tokens: REPORT_CLASS.prompt_tokens,
                ..Default::default()
            };
            let est = estimate(&shape, hw, &req);
            let runs = est.verdict.kind == VerdictKind::Runs;
            chosen = Some((est, req));
            if runs {
                break;
            }
        }
        if let Some((estimate, req)) = chosen {
            let students = students(Engine::predicted(&shape, hw, &req), &estimate);
            out.push(Row {
                model: e.id.clone(),
                params: shape.params,
                embedding: e.kind == "embedding",
                source: e.source.clone(),
                estimate,
                students,
            });
        }
    }
    Ok(out)
}

fn gb(b: u64) -> f64 {
    b as f64 / 1e9
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Stacked bars (weights, KV cache, other) per model against the usable memory.
pub fn svg(rows: &[Row], hw: &Hardware) -> String {
    let usable = hw.usable_bytes() as f64;
    let scale_max = usable * 1.5;
    let (label_w, bar_w, row_h, top) = (190.0, 640.0, 22.0, 40.0);
    let height = top + rows.len() as f64 * row_h + 40.0;
    let x = |bytes: f64| label_w + bar_w * (bytes / scale_max).min(1.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        label_w + bar_w + 120.0
    );
    s.push_str(&format!(
        "<text x=\"{label_w}\" y=\"16\" font-weight=\"bold\">Memory per model on {} ({:.1} GB usable)</text>\n",
        esc(&hw.name),
        hw.usable_gb
    ));
    let legend = [
        ("#4e79a7", "weights"),
        ("#f28e2b", "KV cache"),
        ("#bab0ac", "other"),
    ];
    for (i, (c, name)) in legend.iter().enumerate() {
        let lx = label_w + i as f64 * 110.0;
        s.push_str(&format!(
            "<rect x=\"{lx}\" y=\"24\" width=\"10\" height=\"10\" fill=\"{c}\"/><text x=\"{}\" y=\"33\">{name}</text>\n",
            lx + 14.0
        ));
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let m = &r.estimate.memory;
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{:.0}\" text-anchor=\"end\">{} ({})</text>\n",
            label_w - 6.0,
            y + 14.0,
            esc(&r.model),
            esc(&r.estimate.precision)
        ));
        let mut at = 0.0;
        for (bytes, color) in [
            (m.weights_bytes as f64, "#4e79a7"),
            (m.kv_cache_bytes as f64, "#f28e2b"),
            (m.overhead_bytes as f64, "#bab0ac"),
        ] {
            let (x0, x1) = (x(at), x(at + bytes));
            if x1 > x0 {
                s.push_str(&format!(
                    "<rect x=\"{x0:.1}\" y=\"{:.0}\" width=\"{:.1}\" height=\"{:.0}\" fill=\"{color}\"/>\n",
                    y + 3.0,
                    x1 - x0,
                    row_h - 6.0
                ));
            }
            at += bytes;
        }
        let clipped = at > scale_max;
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.0}\">{:.1} GB{}</text>\n",
            x(at) + 4.0,
            y + 14.0,
            at / 1e9,
            if clipped { " &#x2192;" } else { "" }
        ));
    }
    let ux = x(usable);
    s.push_str(&format!(
        "<line x1=\"{ux:.1}\" y1=\"{}\" x2=\"{ux:.1}\" y2=\"{:.0}\" stroke=\"#c00\" stroke-dasharray=\"4 3\"/>\n<text x=\"{ux:.1}\" y=\"{:.0}\" fill=\"#c00\" text-anchor=\"middle\">usable</text>\n",
        top - 4.0,
        height - 28.0,
        height - 14.0
    ));
    s.push_str("</svg>\n");
    s
}

/// What the speed, first-token and students columns mean.
fn legend() -> String {
    let c = REPORT_CLASS;
    format!(
        "*speeds* says whether a row's speeds were measured on this machine by `aula assess` or predicted by the formulas (memory is always predicted). \
         *First token*: a {}-token prompt's prefill and one decode step, one stream, no queue. \
         *Students*: how many the model holds alone, each thinking {:.0} s between {}-token questions and reading {}-token answers, \
         the median answer at {:.0} tok/s or more and 95% of first tokens within {:.0} s \
         (`aula plan --students`; the rules are in `aula_planner::class`).",
        c.prompt_tokens,
        c.think_s,
        c.prompt_tokens,
        c.answer_tokens,
        REPORT_TARGET.rate_tps,
        REPORT_TARGET.ttft_p95_s
    )
}

fn table(rows: &[Row], users: u32, context: u32) -> Vec<Vec<String>> {
    let mut t = vec![vec![
        "model".to_string(),
        "parameters".into(),
        "precision".into(),
        "weights".into(),
        "KV per token".into(),
        format!("memory for {users} x {context} tokens"),
        format!("most users at {context} tokens"),
        "1 stream".into(),
        format!("{users} users together"),
        format!("first token ({}-token prompt)", REPORT_CLASS.prompt_tokens),
        format!("students at {:.0} tok/s", REPORT_TARGET.rate_tps),
        "speeds".into(),
        "verdict".into(),
    ]];
    for r in rows {
        let e = &r.estimate;
        let m = &e.memory;
        let verdict = match e.verdict.kind {
            VerdictKind::Runs => "runs".to_string(),
            VerdictKind::RunsWithQuantization => {
                format!(
                    "runs at {}",
                    e.verdict.precision.clone().unwrap_or_default()
                )
            }
            VerdictKind::NeedsOffload => "needs offload".into(),
            VerdictKind::DoesNotFit => "does not fit".into(),
        };
        let (one, all, first, how) = match &e.speed {
            Some(s) => (
                format!("{:.1} tok/s", s.single_stream_tokens_per_s),
                format!("{:.0} tok/s", s.aggregate_tokens_per_s),
                format!("{:.2} s", s.time_to_first_token_s),
                if s.measured.is_some() {
                    "measured"
                } else {
                    "predicted"
                },
            ),
            None if r.embedding => ("(embeddings)".into(), "-".into(), "-".into(), "-"),
            None => ("-".into(), "-".into(), "-".into(), "-"),
        };
        t.push(vec![
            r.model.clone(),
            format!("{:.2}B", r.params as f64 / 1e9),
            e.precision.clone(),
            format!("{:.1} GB", gb(m.weights_bytes)),
            format!("{:.0} KiB", m.kv_bytes_per_token / 1024.0),
            format!("{:.1} GB", gb(m.total_bytes)),
            if e.max_sequences == u64::MAX {
                "any".into()
            } else {
                e.max_sequences.to_string()
            },
            one,
            all,
            first,
            r.students.map_or("-".into(), |n| n.to_string()),
            how.into(),
            verdict,
        ]);
    }
    t
}

/// A Markdown page; the chart is the SVG file named `svg_file` (written by the caller).
pub fn markdown(
    rows: &[Row],
    hw: &Hardware,
    engine: EngineKind,
    context: u32,
    users: u32,
    svg_file: &str,
) -> String {
    let mut s = format!(
        "# What can you actually run on {}?\n\n{:.1} GB usable memory, {:.0} GB/s peak memory bandwidth. \
         Every model of Aula's catalog at the best precision that fits (16-bit or the precision it was released in, else 8-bit, else 4-bit), \
         serving {users} users at once with {context} tokens each through the {engine:?} engine. \
         Figures are derived from each model's published shape and the hardware's published limits by the \
         formulas at the end; speeds assume the efficiencies stated ({}). {}\n\n![memory per model]({svg_file})\n\n",
        hw.name,
        hw.usable_gb,
        hw.peak_bandwidth_gbs,
        hw.efficiency_source,
        legend()
    );
    let t = table(rows, users, context);
    for (i, row) in t.iter().enumerate() {
        s.push_str(&format!("| {} |\n", row.join(" | ")));
        if i == 0 {
            s.push_str(&format!("|{}\n", "---|".repeat(row.len())));
        }
    }
    s.push_str("\n## How the figures are made\n\n");
    for (name, f) in FORMULAS {
        s.push_str(&format!("- **{name}**: {f}\n"));
    }
    s.push_str(&format!("\nHardware: {}.\n\nModel sources:\n\n", hw.source));
    for r in rows {
        s.push_str(&format!("- {}: {}\n", r.model, r.source));
    }
    s
}

/// One self-contained HTML page with the chart inline.
pub fn html(rows: &[Row], hw: &Hardware, engine: EngineKind, context: u32, users: u32) -> String {
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>What can you run on {0}?</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style>\
         </head><body>\n<h1>What can you actually run on {0}?</h1>\n<p>{1:.1} GB usable memory, {2:.0} GB/s peak memory bandwidth. \
         Every catalog model at the best precision that fits, serving {users} users at once with {context} tokens each \
         ({engine:?} engine). Speeds assume the efficiencies stated ({3}). {4}</p>\n",
        esc(&hw.name),
        hw.usable_gb,
        hw.peak_bandwidth_gbs,
        esc(&hw.efficiency_source),
        esc(&legend())
    );
    s.push_str(&svg(rows, hw));
    s.push_str("<table>\n");
    for (i, row) in table(rows, users, context).iter().enumerate() {
        let cell = if i == 0 { "th" } else { "td" };
        s.push_str("<tr>");
        for c in row {
            s.push_str(&format!("<{cell}>{}</{cell}>", esc(c)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n<h2>How the figures are made</h2>\n<ul>\n");
    for (name, f) in FORMULAS {
        s.push_str(&format!("<li><b>{}</b>: {}</li>\n", esc(name), esc(f)));
    }
    s.push_str(&format!(
        "</ul>\n<p>Hardware: {}.</p>\n</body></html>\n",
        esc(&hw.source)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware;

    #[test]
    fn whole_catalog_on_a_gb10() {
        let hw = hardware::find("gb10").unwrap();
        let r = rows(&hw, EngineKind::Embedded, 4096, 8).unwrap();
        assert_eq!(r.len(), catalog::entries().unwrap().len());
        let md = markdown(&r, &hw, EngineKind::Embedded, 4096, 8, "chart.svg");
        assert!(md.contains("| llama-2-70b |") && md.contains("![memory per model](chart.svg)"));
        assert!(md.contains("decode step"));
        let svg = svg(&r, &hw);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.matches("<text").count() >= r.len() * 2);
        let page = html(&r, &hw, EngineKind::Embedded, 4096, 8);
        assert!(page.contains("<svg") && page.contains("<table>") && page.ends_with("</html>\n"));
    }
}
