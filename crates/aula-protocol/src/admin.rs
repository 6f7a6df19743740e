//! The admin API's wire types (`/admin/ps`, `/admin/load`, `/admin/unload`):
//! the gateway serialises them and `aula ps|load|unload` deserialises the
//! same types, so the two can never disagree on a field or a state's name.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Who runs a model (one enum for config, fleet, planner and this API).
pub use aula_planner::EngineKind;

/// Where a model stands. On the wire: `"state": "ready"`, or
/// `"state": "failed", "reason": "..."`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ModelState {
    /// Serving (at least one replica is up).
    Ready,
    /// Being started or restarted.
    Loading,
    /// Not running: not loaded yet, unloaded, or evicted.
    Unloaded,
    /// The last start failed; Aula tries again on the next request.
    Failed { reason: String },
    /// A `url` server that fails its health check.
    Unreachable,
}

impl ModelState {
    /// The state's name, as `aula ps` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            ModelState::Ready => "ready",
            ModelState::Loading => "loading",
            ModelState::Unloaded => "unloaded",
            ModelState::Failed { .. } => "failed",
            ModelState::Unreachable => "unreachable",
        }
    }
}

/// One model in `/admin/ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PsRow {
    pub model: String,
    pub engine: EngineKind,
    #[serde(flatten)]
    pub state: ModelState,
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub keep_alive_s: Option<u64>,
    /// What the planner says its engines allocate (managed models).
    #[serde(default)]
    pub planned_bytes: Option<u64>,
    /// What they really allocated, once measured.
    #[serde(default)]
    pub actual_bytes: Option<u64>,
    pub slots: usize,
    pub busy: usize,
    pub queued: usize,
    /// Requests between admission and their end (waiting for a load included).
    #[serde(default)]
    pub active_requests: usize,
    #[serde(default)]
    pub idle_s: Option<f64>,
    #[serde(default)]
    pub load_time_s: Option<f64>,
    /// Where its embedded engines put their memory, per llama.cpp buffer
    /// type (`CUDA0`, `Vulkan0`: device memory; `CUDA_Host`: pinned host
    /// memory; `CPU`, `CPU_Mapped` (the file's pages), `CPU_REPACK` and
    /// `AMX` (weights repacked for the CPU's kernels): host), summed over
    /// its engines: weights, KV cache, compute and output buffers. Mapped
    /// pages and repacked copies can overlap, so the sum may exceed
    /// `actual_bytes`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_bytes: BTreeMap<String, u64>,
    /// Layers offloaded to a GPU, of all layers, as llama.cpp reported:
    /// per engine (the fewest among a model's replicas), not summed.
    #[serde(default)]
    pub layers_offloaded: Option<(u32, u32)>,
}

impl PsRow {
    /// The `where` column: each buffer type's share, and the offload.
    pub fn placement_text(&self) -> String {
        let mut parts: Vec<String> = self
            .device_bytes
            .iter()
            .filter(|(_, b)| **b > 0)
            .map(|(d, b)| format!("{d} {:.2} GB", *b as f64 / 1e9))
            .collect();
        if let Some((a, b)) = self.layers_offloaded {
            parts.push(format!("{a}/{b} layers on GPU"));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Memory of the budget held outside the engines (a fine-tuning job's trainer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryHold {
    pub what: String,
    pub bytes: u64,
}

/// A fine-tuning job that is not finished, in `/admin/ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: String,
    pub user: String,
    pub model: String,
    /// validating_files, queued or running.
    pub status: String,
    pub planned_bytes: u64,
}

/// `/admin/ps`: the fleet and the admission totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ps {
    pub budget_bytes: u64,
    pub models: Vec<PsRow>,
    pub requests_in_flight: u64,
    pub reserved_tokens: i64,
    /// Memory held outside the engines (trainers).
    #[serde(default)]
    pub holds: Vec<MemoryHold>,
    /// Fine-tuning jobs waiting or training, oldest first.
    #[serde(default)]
    pub fine_tuning: Vec<JobRow>,
}

/// The answer of `/admin/load/{model}` and `/admin/unload/{model}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnswer {
    pub model: String,
    #[serde(flatten)]
    pub state: ModelState,
}

fn gb(b: Option<u64>) -> String {
    b.map(|b| format!("{:.2} GB", b as f64 / 1e9))
        .unwrap_or_else(|| "-".into())
}

impl Ps {
    /// The table `aula ps` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<28} {:<12} {:<11} {:>10} {:>10} {:>6} {:>5} {:>7} {:>9}  where",
            "model", "engine", "state", "planned", "actual", "slots", "busy", "queued", "idle"
        );
        for m in &self.models {
            let _ = writeln!(
                out,
                "{:<28} {:<12} {:<11} {:>10} {:>10} {:>6} {:>5} {:>7} {:>9}  {}",
                m.model,
                m.engine.as_str(),
                m.state.name(),
                gb(m.planned_bytes),
                gb(m.actual_bytes),
                m.slots,
                m.busy,
                m.queued,
                m.idle_s
                    .map(|s| format!("{s:.0}s"))
                    .unwrap_or_else(|| "-".into()),
                m.placement_text()
            );
        }
        for m in &self.models {
            if let ModelState::Failed { reason } = &m.state {
                let _ = writeln!(out, "{}: failed: {reason}", m.model);
            }
        }
        for h in &self.holds {
            let _ = writeln!(out, "held: {} {}", gb(Some(h.bytes)), h.what);
        }
        if !self.fine_tuning.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<32} {:<16} {:<28} {:<17} {:>10}",
                "fine-tuning job", "user", "base model", "status", "memory"
            );
            for j in &self.fine_tuning {
                let _ = writeln!(
                    out,
                    "{:<32} {:<16} {:<28} {:<17} {:>10}",
                    j.id,
                    j.user,
                    j.model,
                    j.status,
                    gb(Some(j.planned_bytes))
                );
            }
        }
        let _ = writeln!(out, "memory budget: {}", gb(Some(self.budget_bytes)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_their_wire_names() {
        let row = PsRow {
            model: "m".into(),
            engine: EngineKind::LlamaServer,
            state: ModelState::Failed {
                reason: "no GPU".into(),
            },
            pinned: false,
            keep_alive_s: None,
            planned_bytes: Some(1),
            actual_bytes: None,
            slots: 4,
            busy: 0,
            queued: 0,
            active_requests: 0,
            idle_s: None,
            load_time_s: None,
            device_bytes: BTreeMap::new(),
            layers_offloaded: None,
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["reason"], "no GPU");
        assert_eq!(v["engine"], "llama-server");
        let back: PsRow = serde_json::from_value(v).unwrap();
        assert_eq!(back, row);
        let a: ModelAnswer =
            serde_json::from_str(r#"{"model": "m", "state": "unloaded"}"#).unwrap();
        assert_eq!(a.state, ModelState::Unloaded);
        for k in [
            EngineKind::Embedded,
            EngineKind::LlamaServer,
            EngineKind::Vllm,
            EngineKind::Sglang,
        ] {
            assert_eq!(EngineKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn ps_shows_where_each_model_lives() {
        let mut row: PsRow = serde_json::from_value(serde_json::json!({
            "model": "qwen", "engine": "embedded", "state": "ready", "slots": 4, "busy": 0, "queued": 0,
            "device_bytes": {"CUDA0": 7_100_000_000u64, "CUDA_Host": 210_000_000u64, "CPU_Mapped": 0},
            "layers_offloaded": [29, 29]
        }))
        .unwrap();
        assert_eq!(
            row.placement_text(),
            "CUDA0 7.10 GB, CUDA_Host 0.21 GB, 29/29 layers on GPU"
        );
        let ps = Ps {
            budget_bytes: 1,
            models: vec![row.clone()],
            requests_in_flight: 0,
            reserved_tokens: 0,
            holds: vec![],
            fine_tuning: vec![],
        };
        let text = ps.to_text();
        assert!(text.lines().next().unwrap().ends_with("where"), "{text}");
        assert!(text.contains("CUDA0 7.10 GB"), "{text}");
        row.device_bytes.clear();
        row.layers_offloaded = None;
        assert_eq!(row.placement_text(), "-");
    }
}
