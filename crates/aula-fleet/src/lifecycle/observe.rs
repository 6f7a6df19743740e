//! What the lifecycle reports: the memory an engine really allocated against
//! its plan (from its /health), and `aula ps`'s rows.

use super::*;

impl Lifecycle {
    /// What the engine really allocated, from its /health, against the plan.
    pub(super) async fn note_actual(&self, m: &Arc<Managed>) {
        // Once per start, when every replica is up.
        let all_ready = m
            .member
            .engines
            .iter()
            .all(|(_, b)| matches!(b.state(), Upstream::Ready(_)));
        {
            let Ok(mut st) = m.state.lock() else { return };
            if st.actual_checked || !all_ready {
                return;
            }
            st.actual_checked = true;
        }
        let mut actual = 0u64;
        let mut devices = std::collections::BTreeMap::<String, u64>::new();
        let mut layers: Option<(u32, u32)> = None;
        for (_, b) in &m.member.engines {
            let Upstream::Ready(base) = b.state() else {
                return;
            };
            let health = crate::backend::probe(
                b.client(),
                &format!("{base}/health"),
                b.secret().as_deref(),
                Duration::from_secs(2),
            )
            .await;
            let v: serde_json::Value = health
                .and_then(|body| serde_json::from_slice(&body).ok())
                .unwrap_or_default();
            // Engines whose /health has no memory report (vLLM, llama-server):
            // their processes' resident memory and, through NVML, GPU memory.
            let bytes = v["memory"]["total_bytes"]
                .as_u64()
                .or_else(|| b.pid().and_then(crate::host::process_tree_memory));
            let Some(bytes) = bytes else {
                return;
            };
            actual += bytes;
            // `aula engine` says what it placed where (its load log).
            if let Some(buffers) = v["placement"]["buffers"].as_object() {
                for (name, b) in buffers {
                    let sum: u64 = [
                        "model_bytes",
                        "kv_cache_bytes",
                        "compute_bytes",
                        "output_bytes",
                    ]
                    .iter()
                    .filter_map(|k| b[*k].as_u64())
                    .sum();
                    *devices.entry(name.clone()).or_default() += sum;
                }
            }
            if let (Some(a), Some(of)) = (
                v["placement"]["layers_offloaded"][0].as_u64(),
                v["placement"]["layers_offloaded"][1].as_u64(),
            ) {
                layers = Some(fewest_offloaded(layers, (a as u32, of as u32)));
            }
        }
        let gap = (actual as f64 - m.planned() as f64).abs() / (m.planned().max(1) as f64);
        if gap > 0.10 {
            tracing::warn!(model = %m.name, "allocated {:.3} GB, planned {:.3} GB ({:+.0}%)",
                actual as f64 / 1e9, m.planned() as f64 / 1e9, gap * 100.0);
        }
        if let Ok(mut st) = m.state.lock() {
            st.actual_bytes = Some(actual);
            st.device_bytes = devices;
            st.layers_offloaded = layers;
        }
    }
    pub fn ps(&self) -> Vec<PsRow> {
        self.order
            .iter()
            .filter_map(|n| self.models.get(n))
            .map(|m| {
                let q = m.member.queue.stats();
                let (last, actual, device_bytes, layers_offloaded) = m
                    .state
                    .lock()
                    .map(|s| {
                        (
                            s.last_used,
                            s.actual_bytes,
                            s.device_bytes.clone(),
                            s.layers_offloaded,
                        )
                    })
                    .unwrap_or_default();
                PsRow {
                    model: m.name.clone(),
                    engine: m.kind(),
                    state: m.state(),
                    pinned: m.member.pinned,
                    keep_alive_s: m.member.keep_alive.map(|k| k.as_secs()),
                    planned_bytes: Some(m.planned()),
                    actual_bytes: actual,
                    slots: q.slots,
                    busy: q.busy,
                    queued: q.queued,
                    active_requests: m.active.load(Ordering::SeqCst),
                    idle_s: last.map(|t| t.elapsed().as_secs_f64()),
                    load_time_s: m.load_time().map(|d| d.as_secs_f64()),
                    device_bytes,
                    layers_offloaded,
                }
            })
            .collect()
    }
}
