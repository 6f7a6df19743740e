//! The machine Aula runs on, read from the OS: memory and cores from
//! `/proc`, NVIDIA GPUs through NVML (loaded at run time, so the binary works
//! where there is none), and the memory of an engine's process tree. The
//! planner never reads the host; it is given a [`Hardware`] made here.

use aula_planner::hardware::{Hardware, profiles};

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
            decode_fit: None,
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
            decode_fit: None,
    }
}

/// Memory a process tree uses: resident memory of `pid` and its
/// descendants (from /proc), plus their GPU memory where NVML can tell
/// (discrete NVIDIA GPUs). None if the process is gone.
pub fn process_tree_memory(pid: u32) -> Option<u64> {
    let mut pids = vec![pid];
    // Descendants, breadth-first.
    let all: Vec<(u32, Stat)> = processes()
        .into_iter()
        .filter_map(|p| stat(p).map(|s| (p, s)))
        .collect();
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        pids.extend(
            all.iter()
                .filter(|(_, s)| s.ppid == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    let rss = |p: u32| status_kb(p, "VmRSS").map(|kb| kb * 1024);
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

/// What `/proc/PID/stat` says of a process (the fields Aula reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z`, ...
    pub state: char,
    pub ppid: u32,
    /// CPU time in user and kernel mode, in clock ticks.
    pub utime: u64,
    pub stime: u64,
}

/// The one reader of `/proc/PID/stat`; None when the process is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...; comm may hold spaces and parentheses.
    let (_, rest) = text.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmPeak`, ...).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every process id in `/proc`.
pub fn processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live (not zombie) children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| stat(*p).is_some_and(|s| s.ppid == pid && s.state != 'Z'))
        .collect()
}

/// The first NVIDIA GPU as a trainer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub name: String,
    /// Bytes NVML reports (0 on a unified-memory GB10: use the OS's).
    pub memory_total: u64,
    pub memory_free: u64,
    /// CUDA compute capability (major, minor), when NVML says.
    pub compute_capability: Option<(i32, i32)>,
}

/// The first NVIDIA GPU, if there is one and NVML can be loaded.
pub fn cuda_gpu() -> Option<Gpu> {
    nvml_gpu()
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
    let compute_capability = dev
        .cuda_compute_capability()
        .ok()
        .map(|c| (c.major, c.minor));
    Some(Gpu {
        name,
        memory_total,
        memory_free,
        compute_capability,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn process_memory_of_this_test() {
        let bytes = process_tree_memory(std::process::id()).unwrap();
        assert!(bytes > 1_000_000, "{bytes}");
        assert!(process_tree_memory(u32::MAX - 1).is_none());
    }

    #[test]
    fn proc_reader() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert!(s.state != 'Z');
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(status_kb(me, "VmRSS").unwrap() > 100);
        assert!(status_kb(me, "VmRS").is_none());
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(children_of(me).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!children_of(me).contains(&child.id()));
    }

    #[test]
    fn detection_works_without_a_gpu() {
        let h = detect();
        assert!(h.memory_gb > 0.0, "{h:?}");
        assert!(h.usable_gb > 0.0 && h.usable_gb <= h.memory_gb);
    }
}
