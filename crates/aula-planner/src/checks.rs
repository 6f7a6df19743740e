//! The speed comparison table (`catalog/speed-checks.toml`): published
//! single-stream decode measurements against what the planner predicts for
//! the same model, file, hardware, context and engine, and the range each
//! estimate carries. Rules this module enforces (protocol in
//! `docs/planner-calibration.md`):
//!
//! - every row names its source (a URL) and the figure exactly as published;
//! - rows are split by source: a `calibration` source may set constants in
//!   `catalog/decode.toml`, a `check` source never does; `excluded` rows
//!   say why (a generation the model does not describe);
//! - the range printed with an estimate comes from the check rows of its
//!   device class only (at least [`MIN_CHECKS`] of them), never from rows
//!   that set constants.

use crate::catalog;
use crate::estimate::{EngineKind, PlanRequest, Precision, decode_step};
use crate::hardware::{self, Hardware};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

const DATA: &str = include_str!("../catalog/speed-checks.toml");

/// Fewer check rows than this for a class: no range.
pub const MIN_CHECKS: usize = 2;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// `calibration`, `check` or `excluded`.
    pub set: String,
    pub source: String,
    /// A hardware profile id, or a name with `bandwidth_gbs` and `class`.
    pub hardware: String,
    #[serde(default)]
    pub bandwidth_gbs: Option<f64>,
    #[serde(default)]
    pub class: Option<String>,
    /// The catalog shape planned, and the model as the source names it.
    pub model: String,
    pub published_as: String,
    /// The precision planned (a llama.cpp file type, or vLLM's).
    pub file: String,
    /// A published file size to plan from instead (GiB).
    #[serde(default)]
    pub file_gib: Option<f64>,
    /// `llama.cpp` or `vllm`.
    pub engine: String,
    pub generation: String,
    pub build: String,
    /// Tokens planned: twice the average depth of the measured tokens.
    pub context: u32,
    /// Tokens per second, as published.
    pub measured: f64,
    /// Calibration rows: how closely the fit must reproduce them.
    #[serde(default)]
    pub tolerance: Option<f64>,
    #[serde(default)]
    pub note: String,
}

/// What the table claims for one class's check rows (tested).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub class: String,
    pub checks: usize,
    pub within_25: usize,
    /// The worst |error| of its check rows.
    pub worst: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub row: Vec<Row>,
    pub claim: Vec<Claim>,
}

pub fn table() -> Result<Table, String> {
    toml::from_str::<Table>(DATA).map_err(|e| format!("built-in speed checks: {e}"))
}

/// A row with its prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluated {
    pub row: Row,
    /// The device class (or `vllm`) it counts for.
    pub class: String,
    pub predicted: f64,
    /// predicted / measured - 1.
    pub error: f64,
}

fn hardware_of(row: &Row) -> Result<Hardware, String> {
    if let Ok(h) = hardware::find(&row.hardware) {
        return Ok(h);
    }
    let (Some(bw), Some(class)) = (row.bandwidth_gbs, &row.class) else {
        return Err(format!(
            "{}: not a profile, and no bandwidth and class",
            row.hardware
        ));
    };
    // A profile of the same class, with the row's bandwidth.
    let cat = crate::decode::catalog()?;
    let id = cat
        .class(class)
        .and_then(|c| c.hardware.first())
        .ok_or_else(|| format!("{}: class `{class}` has no profile", row.hardware))?;
    let mut h = hardware::find(id)?;
    h.name = row.hardware.clone();
    h.peak_bandwidth_gbs = bw;
    Ok(h)
}

pub fn evaluate_row(row: &Row) -> Result<Evaluated, String> {
    let hw = hardware_of(row)?;
    let mut shape = catalog::find(&row.model)?;
    if let Some(gib) = row.file_gib {
        shape.weight_bytes = Some((gib * 1024f64.powi(3)) as u64);
        shape.expert_bytes = Some(0);
        shape.lookup_bytes = Some(0);
    }
    let engine = match row.engine.as_str() {
        "llama.cpp" => EngineKind::LlamaServer,
        "vllm" => EngineKind::Vllm,
        other => return Err(format!("unknown engine `{other}` in a speed check")),
    };
    let r = PlanRequest {
        engine,
        precision: Precision::parse(&row.file)?,
        context: row.context,
        users: 1,
        llama_cpp_generation: Some(row.generation.clone()),
        ..Default::default()
    };
    let (t, _, parts) = decode_step(&shape, &hw, &r, 1)
        .ok_or_else(|| format!("{}: no speed estimate", row.hardware))?;
    let predicted = 1.0 / t;
    let class = match parts {
        Some((_, c)) => c.class,
        None => "vllm".to_string(),
    };
    Ok(Evaluated {
        row: row.clone(),
        class,
        predicted,
        error: predicted / row.measured - 1.0,
    })
}

/// Every calibration and check row, evaluated (excluded rows are left out).
pub fn evaluate() -> Result<Vec<Evaluated>, String> {
    table()?
        .row
        .iter()
        .filter(|r| r.set != "excluded")
        .map(evaluate_row)
        .collect()
}

/// The check rows' errors for one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min_error: f64,
    pub max_error: f64,
    pub checks: usize,
    pub within_25: usize,
}

pub fn spread_of(rows: &[Evaluated], class: &str) -> Option<Spread> {
    let errors: Vec<f64> = rows
        .iter()
        .filter(|e| e.row.set == "check" && e.class == class)
        .map(|e| e.error)
        .collect();
    if errors.len() < MIN_CHECKS {
        return None;
    }
    Some(Spread {
        min_error: errors.iter().copied().fold(f64::INFINITY, f64::min),
        max_error: errors.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        checks: errors.len(),
        within_25: errors.iter().filter(|e| e.abs() <= 0.25).count(),
    })
}

static EVALUATED: OnceLock<Vec<Evaluated>> = OnceLock::new();

/// The check spread of a class (computed once per process).
pub fn spread(class: &str) -> Option<Spread> {
    let rows = EVALUATED.get_or_init(|| evaluate().unwrap_or_default());
    spread_of(rows, class)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole comparison table. Calibration rows reproduce within their
    /// tolerance; check rows stay within what the table claims for their
    /// class (share within 25% and worst error) — a regression test of the
    /// claim, not a fit. Prints the table.
    #[test]
    fn the_comparison_table_holds_its_claims() {
        let t = table().unwrap();
        let rows = evaluate().unwrap();
        println!(
            "{:<11} {:<16} {:<26} {:<7} {:<5} {:>7} {:>9} {:>8}",
            "set", "class", "hardware", "file", "gen", "meas.", "predicted", "error"
        );
        for e in &rows {
            println!(
                "{:<11} {:<16} {:<26} {:<7} {:<5} {:>7.2} {:>9.2} {:>+7.1}%",
                e.row.set,
                e.class,
                e.row.hardware,
                e.row.file,
                e.row.generation,
                e.row.measured,
                e.predicted,
                e.error * 100.0
            );
            assert!(e.row.source.starts_with("https://"), "{:?}", e.row);
            match e.row.set.as_str() {
                "calibration" => {
                    let tol = e.row.tolerance.unwrap_or(0.25);
                    assert!(
                        e.error.abs() <= tol,
                        "calibration row off by {:+.1}% (tolerance {:.0}%): {:?}",
                        e.error * 100.0,
                        tol * 100.0,
                        e.row
                    );
                }
                "check" => assert!(e.row.tolerance.is_none(), "a check row sets nothing"),
                other => panic!("unknown set `{other}`"),
            }
        }
        // A source is calibration or check, never both.
        for a in &t.row {
            for b in &t.row {
                if a.source == b.source && a.set != "excluded" && b.set != "excluded" {
                    assert_eq!(a.set, b.set, "{} is split across sets", a.source);
                }
            }
        }
        for r in t.row.iter().filter(|r| r.set == "excluded") {
            assert!(!r.note.is_empty(), "an excluded row says why: {r:?}");
        }
        let mut all = (0, 0, 0.0f64);
        for c in &t.claim {
            let s = spread_of(&rows, &c.class).unwrap();
            let worst = s.max_error.abs().max(s.min_error.abs());
            println!(
                "{}: {} of {} check rows within 25%, worst {:+.1}% .. {:+.1}%",
                c.class,
                s.within_25,
                s.checks,
                s.min_error * 100.0,
                s.max_error * 100.0
            );
            assert_eq!(s.checks, c.checks, "{}", c.class);
            assert!(
                s.within_25 >= c.within_25,
                "{}: {s:?} vs claim {c:?}",
                c.class
            );
            assert!(
                worst <= c.worst + 1e-9,
                "{}: worst {worst:.3} vs claim {c:?}",
                c.class
            );
            all.0 += s.checks;
            all.1 += s.within_25;
            all.2 = all.2.max(worst);
        }
        println!(
            "all checks: {} of {} within 25%, worst |error| {:.1}%",
            all.1,
            all.0,
            all.2 * 100.0
        );
        // The set covers what the protocol asks for.
        let checks: Vec<&Evaluated> = rows.iter().filter(|e| e.row.set == "check").collect();
        for class in ["cuda-datacenter", "cuda-consumer", "metal", "gb10"] {
            assert!(
                checks.iter().any(|e| e.class == class),
                "no check row for {class}"
            );
        }
        assert!(checks.iter().any(|e| e.row.file == "f16"));
        assert!(checks.iter().any(|e| e.row.file.starts_with("q4")));
    }
}
