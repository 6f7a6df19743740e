//! Where the model runs: the devices llama.cpp found (with their memory),
//! what it placed on each (from its load log: "<buffer> model buffer size",
//! "KV buffer size", "compute buffer size", "output buffer size", and
//! "offloaded N/M layers to GPU"), and which layers go where.
//!
//! Rules:
//! - `--gpu-layers` defaults to all when a GPU (or integrated GPU) device is
//!   present, and to none otherwise; `--device` names devices as llama.cpp
//!   does (`CUDA0`, `Vulkan0`, `Metal`); an unknown name is an error that
//!   lists the devices there are.
//! - Buffers are reported per llama.cpp buffer type, as logged: `CUDA0`,
//!   `Vulkan0` (device memory), `CUDA_Host`/`Vulkan_Host` (pinned host
//!   memory), `CPU`, `CPU_Mapped` (the file's pages), `CPU_REPACK`.

use serde::Serialize;
use std::collections::BTreeMap;

/// How many layers to offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuLayers {
    All,
    Count(u32),
}

impl std::str::FromStr for GpuLayers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" | "max" => Ok(GpuLayers::All),
            n => n
                .parse::<u32>()
                .map(GpuLayers::Count)
                .map_err(|_| format!("`{s}`: use a number of layers or `all`")),
        }
    }
}

/// One device llama.cpp can run on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Device {
    /// ggml's index (what `with_devices` takes).
    #[serde(skip)]
    pub index: usize,
    pub name: String,
    pub description: String,
    pub backend: String,
    /// cpu, gpu, igpu or accel.
    pub kind: &'static str,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
}

impl Device {
    pub fn is_gpu(&self) -> bool {
        matches!(self.kind, "gpu" | "igpu")
    }
}

/// Every device ggml registered (after the backends are loaded).
pub fn devices() -> Vec<Device> {
    use llama_cpp_2::LlamaBackendDeviceType as T;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            index: d.index,
            name: d.name,
            description: d.description,
            backend: d.backend,
            kind: match d.device_type {
                T::Cpu => "cpu",
                T::Gpu => "gpu",
                T::IntegratedGpu => "igpu",
                T::Accelerator => "accel",
                _ => "unknown",
            },
            memory_total_bytes: d.memory_total as u64,
            memory_free_bytes: d.memory_free as u64,
        })
        .collect()
}

/// The devices `--device` names (none given: let llama.cpp use every GPU).
pub fn pick(all: &[Device], names: &[String]) -> anyhow::Result<Vec<usize>> {
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|d| d.name.eq_ignore_ascii_case(n))
                .map(|d| d.index)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--device {n}: no such device; this machine has: {}",
                        all.iter()
                            .map(|d| format!("{} ({})", d.name, d.description))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect()
}

/// The layer count for llama.cpp: `all` is every layer (and the output).
pub fn layer_count(l: Option<GpuLayers>, any_gpu: bool) -> u32 {
    match l {
        Some(GpuLayers::All) => 9999,
        Some(GpuLayers::Count(n)) => n,
        None if any_gpu => 9999,
        None => 0,
    }
}

/// What llama.cpp put in one kind of buffer.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Buffers {
    pub model_bytes: u64,
    pub kv_cache_bytes: u64,
    pub compute_bytes: u64,
    pub output_bytes: u64,
}

/// The load log read per buffer type, and the offload line.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Placement {
    pub buffers: BTreeMap<String, Buffers>,
    /// (offloaded, of) layers, when llama.cpp said.
    pub layers_offloaded: Option<(u32, u32)>,
}

fn mib(rest: &str) -> Option<u64> {
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Some((num.parse::<f64>().ok()? * 1024.0 * 1024.0).round() as u64)
}

pub fn placement(log: &str) -> Placement {
    let mut p = Placement::default();
    for line in log.lines() {
        if let Some(i) = line.find("offloaded ")
            && line.contains("layers to GPU")
        {
            let frac = line[i + "offloaded ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            if let Some((a, b)) = frac.split_once('/')
                && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
            {
                p.layers_offloaded = Some((a, b));
            }
            continue;
        }
        for (marker, field) in [
            (" model buffer size", 0),
            (" KV buffer size", 1),
            (" compute buffer size", 2),
            (" output buffer size", 3),
        ] {
            let Some(i) = line.find(marker) else { continue };
            let Some(bytes) = mib(&line[i + marker.len()..]) else {
                continue;
            };
            let name = line[..i]
                .split_whitespace()
                .last()
                .unwrap_or("?")
                .to_string();
            let b = p.buffers.entry(name).or_default();
            match field {
                0 => b.model_bytes += bytes,
                1 => b.kv_cache_bytes += bytes,
                2 => b.compute_bytes += bytes,
                _ => b.output_bytes += bytes,
            }
            break;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_log_is_read_per_buffer_type() {
        let log = "load_tensors: offloading 30 repeating layers to GPU\n\
                   load_tensors: offloaded 31/31 layers to GPU\n\
                   load_tensors:      Vulkan0 model buffer size =    98.35 MiB\n\
                   load_tensors:   CPU_Mapped model buffer size =    14.06 MiB\n\
                   llama_context: Vulkan_Host  output buffer size =     0.19 MiB\n\
                   llama_kv_cache:    Vulkan0 KV buffer size =    90.00 MiB\n\
                   llama_context:    Vulkan0 compute buffer size =    66.50 MiB\n\
                   llama_context: Vulkan_Host compute buffer size =     5.01 MiB\n\
                   llama_context: CPU compute buffer size is   1.0000 MiB, matches expectation\n";
        let p = placement(log);
        assert_eq!(p.layers_offloaded, Some((31, 31)));
        let v = p.buffers["Vulkan0"];
        assert_eq!(v.model_bytes, (98.35f64 * 1048576.0).round() as u64);
        assert_eq!(v.kv_cache_bytes, 90 * 1048576);
        assert_eq!(v.compute_bytes, (66.5f64 * 1048576.0).round() as u64);
        assert_eq!(
            p.buffers["Vulkan_Host"].output_bytes,
            (0.19f64 * 1048576.0).round() as u64
        );
        assert_eq!(
            p.buffers["CPU_Mapped"].model_bytes,
            (14.06f64 * 1048576.0).round() as u64
        );
        assert!(
            !p.buffers.contains_key("CPU"),
            "the 'is ... matches' line is not a buffer"
        );
    }

    #[test]
    fn layer_choices() {
        assert_eq!("all".parse::<GpuLayers>(), Ok(GpuLayers::All));
        assert_eq!("12".parse::<GpuLayers>(), Ok(GpuLayers::Count(12)));
        assert!("some".parse::<GpuLayers>().is_err());
        assert_eq!(layer_count(None, false), 0);
        assert_eq!(layer_count(None, true), 9999);
        assert_eq!(layer_count(Some(GpuLayers::Count(3)), true), 3);
    }
}
