//! Set-up's choice of llama.cpp build (`scripts/detect-backend.sh`), with
//! every input it looks at faked: `nvidia-smi`, `nvcc`, `vulkaninfo` and
//! `glslc` on a PATH that holds nothing else of this machine's (only the
//! shell tools the script needs), and the CUDA directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/detect-backend.sh")
}

/// A PATH directory with the script's shell tools and the given fakes.
fn fake_path(dir: &Path, fakes: &[(&str, &str)]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["grep", "head", "tr", "bash"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is missing"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    for (name, body) in fakes {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// (stdout, stderr) of the script with these fakes and environment.
fn detect(tag: &str, fakes: &[(&str, &str)], env: &[(&str, &str)]) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("aula-detect-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = fake_path(&dir, fakes);
    // Vulkan headers as a Vulkan SDK has them (with VK_EXT_layer_settings), unless the
    // test names others.
    let include = dir.join("include");
    std::fs::create_dir_all(include.join("vulkan")).unwrap();
    std::fs::write(
        include.join("vulkan/vulkan_core.h"),
        "#define VK_HEADER_VERSION 275\n#define VK_EXT_layer_settings 1\n",
    )
    .unwrap();
    let out = Command::new(bin.join("bash"))
        .arg(script())
        .env_clear()
        .env("PATH", &bin)
        .env("AULA_CUDA_HOME", dir.join("no-cuda-here"))
        .env("AULA_VULKAN_INCLUDE", &include)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GB10: (&str, &str) = ("nvidia-smi", "echo 12.1");
const H100: (&str, &str) = ("nvidia-smi", "echo 9.0");
const NVCC: (&str, &str) = ("nvcc", "echo 'Cuda compilation tools, release 13.0'");
const VULKANINFO: (&str, &str) = (
    "vulkaninfo",
    "echo '	deviceType         = PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU'",
);
const LAVAPIPE: (&str, &str) = (
    "vulkaninfo",
    "echo '	deviceType         = PHYSICAL_DEVICE_TYPE_CPU'",
);
const GLSLC: (&str, &str) = ("glslc", "true");

#[test]
fn set_up_picks_the_build_the_machine_can_use() {
    // No GPU at all.
    let (out, err) = detect("none", &[], &[]);
    assert_eq!(out, "cpu", "{err}");
    assert!(err.contains("no GPU found"), "{err}");

    // A GB10 with the toolkit: CUDA for its architecture only.
    let (out, err) = detect("gb10", &[GB10, NVCC], &[]);
    assert_eq!(out, "cuda 121a-real", "{err}");
    // An H100 with the toolkit.
    let (out, _) = detect("h100", &[H100, NVCC], &[]);
    assert_eq!(out, "cuda 90-real");

    // A GPU without the toolkit: the CPU build, and what to install.
    let (out, err) = detect("no-toolkit", &[GB10], &[]);
    assert_eq!(out, "cpu", "{err}");
    assert!(
        err.contains("no CUDA toolkit")
            && err.contains("nvidia-cuda-toolkit")
            && err.contains("nvidia-cuda-nvcc"),
        "{err}"
    );

    // The toolkit without a GPU (a build machine): the CPU build, said so.
    let (out, err) = detect("no-gpu", &[NVCC], &[]);
    assert_eq!(out, "cpu", "{err}");
    assert!(err.contains("no NVIDIA GPU"), "{err}");

    // A Vulkan GPU with glslc: Vulkan; Mesa's CPU rasteriser is not a GPU.
    let (out, err) = detect("vulkan", &[VULKANINFO, GLSLC], &[]);
    assert_eq!(out, "vulkan", "{err}");
    // Debian 12's headers are too old for llama.cpp's Vulkan backend.
    let old_headers =
        std::env::temp_dir().join(format!("aula-detect-vk239-{}", std::process::id()));
    std::fs::create_dir_all(old_headers.join("vulkan")).unwrap();
    std::fs::write(
        old_headers.join("vulkan/vulkan_core.h"),
        "#define VK_HEADER_VERSION 239\n",
    )
    .unwrap();
    let (out, err) = detect(
        "old-headers",
        &[VULKANINFO, GLSLC],
        &[("AULA_VULKAN_INCLUDE", old_headers.to_str().unwrap())],
    );
    let _ = std::fs::remove_dir_all(&old_headers);
    assert_eq!(out, "cpu", "{err}");
    assert!(
        err.contains("1.3.239") && err.contains("VK_EXT_layer_settings"),
        "{err}"
    );
    // ... and it says how to get newer ones.
    assert!(err.contains("scripts/vulkan-headers.sh"), "{err}");
    let (out, _) = detect("lavapipe", &[LAVAPIPE, GLSLC], &[]);
    assert_eq!(out, "cpu");
    let (out, _) = detect("no-glslc", &[VULKANINFO], &[]);
    assert_eq!(out, "cpu");

    // AULA_BACKEND decides, whatever is found.
    let (out, _) = detect("force-cpu", &[GB10, NVCC], &[("AULA_BACKEND", "cpu")]);
    assert_eq!(out, "cpu");
    let (out, _) = detect("force-vulkan", &[], &[("AULA_BACKEND", "vulkan")]);
    assert_eq!(out, "vulkan");
    let (out, _) = detect("force-cuda", &[H100], &[("AULA_BACKEND", "cuda")]);
    assert_eq!(out, "cuda 90-real");
    let (out, _) = detect(
        "force-cuda-arch",
        &[],
        &[
            ("AULA_BACKEND", "cuda"),
            ("CMAKE_CUDA_ARCHITECTURES", "121a-real"),
        ],
    );
    assert_eq!(out, "cuda 121a-real");
    let (out, err) = detect("bad", &[], &[("AULA_BACKEND", "opencl")]);
    assert_eq!(out, "");
    assert!(err.contains("use cpu, cuda or vulkan"), "{err}");
}
