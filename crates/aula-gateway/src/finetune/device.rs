//! Where a job's trainer runs and how: chosen once, when the job is
//! created, from the box's GPU (NVML) and `[fine_tuning] device`; stored in
//! the job's settings and given to the trainer, which checks it again
//! against what PyTorch sees and fails the job with the reason if it does
//! not hold.
//!
//! Rules:
//! * **No CUDA GPU, or `device = "cpu"`**: the CPU, LoRA on f32 weights,
//!   no gradient checkpointing (as before). QLoRA is refused with the
//!   reason: bitsandbytes' 4-bit NF4 kernels run on CUDA GPUs.
//! * **A CUDA GPU, `device` "auto" (the default) or "cuda"**: the GPU, with
//!   gradient checkpointing. bf16 where the GPU computes it (compute
//!   capability 8.0 and later: Ampere, Hopper, Blackwell — the GB10 is
//!   12.1), else f32 (fp16 LoRA without loss scaling is not offered).
//!   QLoRA (NF4 base, bf16 compute) only with bf16.
//! * **`device = "cuda"` on a box without one**: jobs are refused, saying so.
//! * **Memory**: the planner's estimate for that device and method
//!   (`cpu_trainer_bytes` / `gpu_trainer_bytes`); a batch size left to
//!   "auto" on the GPU is the largest of 1-16 (and at most the examples)
//!   whose estimate fits the room the fleet's budget leaves; on the CPU it
//!   stays 8 (its activations cost more than the adapters gain).

use serde::{Deserialize, Serialize};

/// `[fine_tuning] device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSetting {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceSetting {
    pub fn parse(s: &str) -> Option<DeviceSetting> {
        match s {
            "auto" => Some(DeviceSetting::Auto),
            "cpu" => Some(DeviceSetting::Cpu),
            "cuda" => Some(DeviceSetting::Cuda),
            _ => None,
        }
    }
}

/// Where the trainer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

/// The weights' and compute's precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// How one job trains (stored in its settings; the trainer's job file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Placement {
    pub device: Device,
    pub precision: Precision,
    pub qlora: bool,
    pub gradient_checkpointing: bool,
}

/// The GPU a trainer could use: NVML's name and CUDA compute capability.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainGpu {
    pub name: String,
    pub compute_capability: Option<(i32, i32)>,
}

impl TrainGpu {
    /// bf16 arithmetic: compute capability 8.0 and later.
    pub fn has_bf16(&self) -> bool {
        self.compute_capability.is_some_and(|(major, _)| major >= 8)
    }
}

/// The box's GPU as NVML reports it.
pub fn detect() -> Option<TrainGpu> {
    aula_fleet::host::cuda_gpu().map(|g| TrainGpu {
        name: g.name,
        compute_capability: g.compute_capability,
    })
}

/// Where and how a job trains; the error is the reason a job asking for
/// this cannot train here.
pub fn choose(
    setting: DeviceSetting,
    gpu: Option<&TrainGpu>,
    qlora: bool,
) -> Result<Placement, String> {
    let gpu = match (setting, gpu) {
        (DeviceSetting::Cpu, _) => None,
        (DeviceSetting::Cuda, None) => {
            return Err(
                "[fine_tuning] device is \"cuda\" but this box has no NVIDIA GPU that NVML reports"
                    .into(),
            );
        }
        (_, g) => g,
    };
    let Some(gpu) = gpu else {
        if qlora {
            let why = if setting == DeviceSetting::Cpu {
                "this box trains on the CPU ([fine_tuning] device = \"cpu\")"
            } else {
                "this box has no NVIDIA GPU"
            };
            return Err(format!(
                "QLoRA is not available: its 4-bit NF4 base weights need bitsandbytes' CUDA kernels, and {why}; leave out `lora.qlora` to train LoRA on the CPU in f32"
            ));
        }
        return Ok(Placement::default());
    };
    let precision = if gpu.has_bf16() {
        Precision::Bf16
    } else {
        Precision::F32
    };
    if qlora && precision != Precision::Bf16 {
        return Err(format!(
            "QLoRA is not available: it computes in bf16, which the {} (compute capability {}) lacks; leave out `lora.qlora` to train LoRA in f32 on it",
            gpu.name,
            gpu.compute_capability
                .map_or("unknown".to_string(), |(a, b)| format!("{a}.{b}"))
        ));
    }
    Ok(Placement {
        device: Device::Cuda,
        precision,
        qlora,
        gradient_checkpointing: true,
    })
}

/// The planner's estimate of the trainer's peak memory.
pub fn planned_bytes(
    shape: &aula_planner::shape::ModelShape,
    from_gguf: bool,
    p: &Placement,
    rank: u32,
    batch: u32,
    seq: u32,
) -> u64 {
    match p.device {
        Device::Cpu => aula_planner::finetune::cpu_trainer_bytes(shape, rank, batch, seq),
        Device::Cuda => {
            let b = aula_planner::finetune::gpu_trainer_bytes(
                shape, from_gguf, p.qlora, rank, batch, seq,
            );
            // f32 weights: twice bf16's.
            if p.precision == Precision::F32 && !p.qlora {
                b + 2 * shape.params
            } else {
                b
            }
        }
    }
}

/// The largest batch on the GPU: at most 16 and the examples, whose
/// estimate fits `room`; 1 when none does (the job is then refused for its
/// memory, with the estimate at batch 1). On the CPU: 8, at most the
/// examples.
pub fn auto_batch(
    shape: &aula_planner::shape::ModelShape,
    from_gguf: bool,
    p: &Placement,
    rank: u32,
    seq: u32,
    examples: usize,
    room: u64,
) -> u32 {
    let most = examples.clamp(1, 16) as u32;
    match p.device {
        Device::Cpu => most.min(8),
        Device::Cuda => (1..=most)
            .rev()
            .find(|b| planned_bytes(shape, from_gguf, p, rank, *b, seq) <= room)
            .unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gpu(cc: (i32, i32)) -> TrainGpu {
        TrainGpu {
            name: "NVIDIA GB10".into(),
            compute_capability: Some(cc),
        }
    }

    #[test]
    fn no_gpu_trains_f32_lora_on_the_cpu_and_refuses_qlora_saying_why() {
        let p = choose(DeviceSetting::Auto, None, false).unwrap();
        assert_eq!(p, Placement::default());
        assert_eq!((p.device, p.precision), (Device::Cpu, Precision::F32));
        let e = choose(DeviceSetting::Auto, None, true).unwrap_err();
        assert!(e.contains("QLoRA") && e.contains("no NVIDIA GPU"), "{e}");
        // A GPU the configuration keeps out: the CPU, and QLoRA says so.
        let g = gpu((12, 1));
        assert_eq!(
            choose(DeviceSetting::Cpu, Some(&g), false).unwrap().device,
            Device::Cpu
        );
        let e = choose(DeviceSetting::Cpu, Some(&g), true).unwrap_err();
        assert!(e.contains("device = \"cpu\""), "{e}");
        let e = choose(DeviceSetting::Cuda, None, false).unwrap_err();
        assert!(e.contains("no NVIDIA GPU"), "{e}");
    }

    #[test]
    fn a_bf16_gpu_trains_bf16_with_checkpointing_and_allows_qlora() {
        for setting in [DeviceSetting::Auto, DeviceSetting::Cuda] {
            let p = choose(setting, Some(&gpu((12, 1))), false).unwrap();
            assert_eq!(
                p,
                Placement {
                    device: Device::Cuda,
                    precision: Precision::Bf16,
                    qlora: false,
                    gradient_checkpointing: true
                }
            );
            let q = choose(setting, Some(&gpu((9, 0))), true).unwrap();
            assert!(q.qlora && q.precision == Precision::Bf16);
        }
    }

    #[test]
    fn an_older_gpu_trains_f32_and_refuses_qlora() {
        let v100 = TrainGpu {
            name: "Tesla V100".into(),
            compute_capability: Some((7, 0)),
        };
        let p = choose(DeviceSetting::Auto, Some(&v100), false).unwrap();
        assert_eq!((p.device, p.precision), (Device::Cuda, Precision::F32));
        let e = choose(DeviceSetting::Auto, Some(&v100), true).unwrap_err();
        assert!(e.contains("bf16") && e.contains("7.0"), "{e}");
        // Unknown capability: no bf16 assumed.
        let unknown = TrainGpu {
            name: "x".into(),
            compute_capability: None,
        };
        assert_eq!(
            choose(DeviceSetting::Auto, Some(&unknown), false)
                .unwrap()
                .precision,
            Precision::F32
        );
    }

    #[test]
    fn the_batch_is_the_largest_that_fits() {
        let shape = aula_planner::catalog::find("llama-3.1-8b").unwrap();
        let p = choose(DeviceSetting::Auto, Some(&gpu((12, 1))), true).unwrap();
        let at = |b| planned_bytes(&shape, true, &p, 16, b, 2048);
        // Room for 5 but not 6.
        let room = at(5) + (at(6) - at(5)) / 2;
        assert_eq!(auto_batch(&shape, true, &p, 16, 2048, 1000, room), 5);
        assert_eq!(auto_batch(&shape, true, &p, 16, 2048, 3, u64::MAX), 3);
        assert_eq!(auto_batch(&shape, true, &p, 16, 2048, 1000, u64::MAX), 16);
        assert_eq!(auto_batch(&shape, true, &p, 16, 2048, 1000, 0), 1);
        let cpu = Placement::default();
        assert_eq!(auto_batch(&shape, true, &cpu, 16, 2048, 1000, 0), 8);
        // QLoRA's plan is below LoRA's by most of the bf16 weights.
        let lora = choose(DeviceSetting::Auto, Some(&gpu((12, 1))), false).unwrap();
        assert!(planned_bytes(&shape, true, &lora, 16, 4, 2048) > at(4) + shape.params);
    }
}
