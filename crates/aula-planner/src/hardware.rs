//! Hardware profiles (data in `catalog/hardware.toml`) and detection of the
//! machine `aula plan` runs on: memory and cores from the OS, NVIDIA GPUs
//! through NVML, loaded at run time so the binary works where there is none.

use serde::{Deserialize, Serialize};

const PROFILES: &str = include_str!("../catalog/hardware.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Installed memory (GPU memory, or the unified pool).
    pub memory_gb: f64,
    /// What models may use: the unified pool less what the OS keeps, or the
    /// GPU's memory less what the driver reserves.
    pub usable_gb: f64,
    pub unified: bool,
    pub peak_bandwidth_gbs: f64,
    pub peak_tflops_16bit: f64,
    pub peak_tflops_8bit: f64,
    /// Share of peak bandwidth that decoding reaches (llama.cpp).
    pub decode_efficiency: f64,
    /// The same for vLLM and SGLang where a measurement says it differs;
    /// otherwise `decode_efficiency`.
    #[serde(default)]
    pub decode_efficiency_vllm: Option<f64>,
    /// Share of peak 16-bit FLOPS that prefill reaches.
    pub compute_efficiency: f64,
    pub source: String,
    /// Where the efficiencies come from: a citation, or `assumed`.
    pub efficiency_source: String,
}

impl Hardware {
    pub fn usable_bytes(&self) -> u64 {
        (self.usable_gb * 1e9) as u64
    }
    /// Bytes per second decoding actually reads (llama.cpp engines).
    pub fn achievable_bandwidth(&self) -> f64 {
        self.peak_bandwidth_gbs * 1e9 * self.decode_efficiency
    }
    /// Bytes per second decoding reads in vLLM or SGLang.
    pub fn achievable_bandwidth_vllm(&self) -> f64 {
        self.peak_bandwidth_gbs
            * 1e9
            * self
                .decode_efficiency_vllm
                .unwrap_or(self.decode_efficiency)
    }
    /// FLOP/s prefill actually reaches at 16-bit (8-bit weights: the 8-bit rate).
    pub fn achievable_flops(&self, eight_bit: bool) -> f64 {
        let peak = if eight_bit {
            self.peak_tflops_8bit
        } else {
            self.peak_tflops_16bit
        };
        peak * 1e12 * self.compute_efficiency
    }
}

#[derive(Deserialize)]
struct File {
    hardware: Vec<Hardware>,
}

pub fn profiles() -> Result<Vec<Hardware>, String> {
    toml::from_str::<File>(PROFILES)
        .map(|f| f.hardware)
        .map_err(|e| format!("built-in hardware profiles: {e}"))
}

/// A profile by id or alias (case-insensitive).
pub fn find(name: &str) -> Result<Hardware, String> {
    let all = profiles()?;
    let n = name.to_ascii_lowercase();
    all.iter()
        .find(|h| h.id == n || h.aliases.contains(&n))
        .cloned()
        .ok_or_else(|| {
            let ids: Vec<&str> = all.iter().map(|h| h.id.as_str()).collect();
            format!(
                "unknown hardware `{name}`; known: {} (or --detect)",
                ids.join(", ")
            )
        })
}

/// What the OS says about this machine's memory: (total, available) bytes
/// from /proc/meminfo. `MemAvailable` is what a new process can really get,
/// which on unified-memory machines is the figure that matters ("free"
/// leaves out reclaimable caches).
pub fn os_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |key: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The machine this runs on. An NVIDIA GPU found through NVML is matched to
/// a profile by name for its bandwidth and FLOPS, with the memory NVML
/// reports; a GB10 (unified) gets the OS's available memory. Without a GPU,
/// the CPU and RAM, with bandwidth and FLOPS unknown (0): memory verdicts
/// only.
pub fn detect() -> Hardware {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (total, available) = os_memory().unwrap_or((0, 0));
    if let Some(gpu) = nvml_gpu() {
        let lower = gpu.name.to_ascii_lowercase();
        let matched = profiles().ok().and_then(|all| {
            all.into_iter().find(|h| {
                let key = h.id.replace('-', " ");
                lower.contains(&key)
                    || lower.contains(&h.id)
                    || (h.id == "gb10" && lower.contains("gb10"))
                    || (h.id == "h100-sxm" && lower.contains("h100") && !lower.contains("pcie"))
                    || (h.id == "h100-pcie" && lower.contains("h100") && lower.contains("pcie"))
                    || (h.id.starts_with("a100") && lower.contains("a100") && {
                        let big = gpu.memory_total > 50_000_000_000;
                        (h.id == "a100-80gb") == big
                    })
            })
        });
        let mut h = matched.unwrap_or_else(|| Hardware {
            id: "detected-gpu".into(),
            name: gpu.name.clone(),
            aliases: vec![],
            memory_gb: 0.0,
            usable_gb: 0.0,
            unified: false,
            peak_bandwidth_gbs: 0.0,
            peak_tflops_16bit: 0.0,
            peak_tflops_8bit: 0.0,
            decode_efficiency: 0.75,
            decode_efficiency_vllm: None,
            compute_efficiency: 0.5,
            source: "NVML (no profile matches this GPU: speeds unknown)".into(),
            efficiency_source: "assumed".into(),
        });
        h.name = format!("{} (detected)", gpu.name);
        if h.unified {
            h.memory_gb = total as f64 / 1e9;
            h.usable_gb = available as f64 / 1e9;
        } else {
            h.memory_gb = gpu.memory_total as f64 / 1e9;
            h.usable_gb = gpu.memory_free as f64 / 1e9;
        }
        h.source = format!(
            "detected through NVML; speeds from the `{}` profile: {}",
            h.id, h.source
        );
        return h;
    }
    Hardware {
        id: "detected-cpu".into(),
        name: format!("this machine: {cores} CPU cores, {:.1} GB RAM (no NVIDIA GPU found)", total as f64 / 1e9),
        aliases: vec![],
        memory_gb: total as f64 / 1e9,
        usable_gb: available as f64 / 1e9,
        unified: true,
        peak_bandwidth_gbs: 0.0,
        peak_tflops_16bit: 0.0,
        peak_tflops_8bit: 0.0,
        decode_efficiency: 0.75,
        decode_efficiency_vllm: None,
        compute_efficiency: 0.5,
        source: "/proc/meminfo (MemTotal, MemAvailable); CPU bandwidth is not detected, so speeds are not estimated".into(),
        efficiency_source: "assumed".into(),
    }
}

/// Memory a process tree uses: resident memory of `pid` and its
/// descendants (from /proc), plus their GPU memory where NVML can tell
/// (discrete NVIDIA GPUs). None if the process is gone.
pub fn process_tree_memory(pid: u32) -> Option<u64> {
    let mut pids = vec![pid];
    // Descendants, breadth-first, from each process's parent id.
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some((_, rest)) = stat.rsplit_once(") ")
                && let Some(ppid) = rest
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse::<u32>().ok())
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        pids.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    let rss = |p: u32| -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    let first = rss(pid)?;
    let mut total = first + pids.iter().skip(1).filter_map(|p| rss(*p)).sum::<u64>();
    if let Ok(nvml) = nvml_wrapper::Nvml::init() {
        let count = nvml.device_count().unwrap_or(0);
        for i in 0..count {
            let Ok(dev) = nvml.device_by_index(i) else {
                continue;
            };
            for proc_info in dev.running_compute_processes().unwrap_or_default() {
                if pids.contains(&proc_info.pid)
                    && let nvml_wrapper::enums::device::UsedGpuMemory::Used(b) =
                        proc_info.used_gpu_memory
                {
                    total += b;
                }
            }
        }
    }
    Some(total)
}

struct Gpu {
    name: String,
    memory_total: u64,
    memory_free: u64,
}

/// The first NVIDIA GPU, if NVML (libnvidia-ml) can be loaded.
fn nvml_gpu() -> Option<Gpu> {
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    let dev = nvml.device_by_index(0).ok()?;
    let name = dev.name().ok()?;
    // GB10 reports no dedicated memory: use the unified pool (the caller does).
    let (memory_total, memory_free) = dev
        .memory_info()
        .map(|m| (m.total, m.free))
        .unwrap_or((0, 0));
    Some(Gpu {
        name,
        memory_total,
        memory_free,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_load_and_resolve() {
        let all = profiles().unwrap();
        assert!(all.len() >= 12);
        let spark = find("DGX-Spark").unwrap();
        assert_eq!(spark.id, "gb10");
        assert_eq!(spark.peak_bandwidth_gbs, 273.0);
        assert!(spark.unified && (spark.usable_gb - 119.6).abs() < 1e-9);
        for h in &all {
            assert!(h.usable_gb <= h.memory_gb, "{}", h.id);
            assert!(h.decode_efficiency > 0.0 && h.decode_efficiency <= 1.0);
        }
        let e = find("tpu-v9").unwrap_err();
        assert!(e.contains("gb10") && e.contains("tpu-v9"), "{e}");
    }

    #[test]
    fn process_memory_of_this_test() {
        let bytes = process_tree_memory(std::process::id()).unwrap();
        assert!(bytes > 1_000_000, "{bytes}");
        assert!(process_tree_memory(u32::MAX - 1).is_none());
    }

    #[test]
    fn detection_works_without_a_gpu() {
        let h = detect();
        assert!(h.memory_gb > 0.0, "{h:?}");
        assert!(h.usable_gb > 0.0 && h.usable_gb <= h.memory_gb);
    }
}
