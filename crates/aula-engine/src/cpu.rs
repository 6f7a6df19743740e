//! Which CPU kernels llama.cpp runs, chosen at run time from what this
//! process can really execute — never from the build host's flags.
//!
//! llama.cpp is built once per x86-64 (or Arm) instruction-set level, each a
//! `libggml-cpu-<variant>.so` module beside the binary (ggml's
//! `GGML_CPU_ALL_VARIANTS`, through llama-cpp-2's `dynamic-backends`). The
//! rules this module enforces:
//!
//! * **Exactly one CPU variant is loaded per process**, before any model.
//! * **A variant is eligible only if ggml's own check passes**: its
//!   `ggml_backend_score` reads `cpuid` and answers 0 when the CPU lacks an
//!   instruction the module was compiled with. The eligible variant with the
//!   highest score wins, as in llama.cpp's release binaries.
//! * **AMX is used only after ggml's own AMX kernel has been seen to work.**
//!   `cpuid` listing AMX is not enough: a virtual machine can list it while
//!   the hypervisor or kernel does not let a process use it, and GCC 12
//!   (Debian 12's compiler) miscompiles ggml's tile set-up — it drops the
//!   stores of the tile shapes before `_tile_loadconfig`, so the first
//!   `tilezero` faults (#UD) on every AMX machine. Either way the engine would
//!   die with an illegal instruction on its first prompt. So a variant
//!   compiled with AMX (its features include `AMX_INT8`) is loaded only if a
//!   probe passed: a child process (`aula` itself, re-run with
//!   `AULA_CPU_PROBE` set — a fault kills the child, not the engine) loads
//!   that very module, places a Q8_0 weight matrix in ggml's AMX buffer,
//!   multiplies it on the CPU backend and compares with the same product
//!   through the plain CPU buffer. The answer is cached per boot (keyed by
//!   the kernel's `boot_id` and the module's size and time) in the user's
//!   cache directory.
//! * **Overrides are explicit environment variables**, read here only:
//!   `AULA_CPU_AMX=off` never uses AMX; `AULA_AMX_PROBE=force-fail` makes the
//!   probe child execute an illegal instruction first, so the failure path
//!   can be tested on any machine (the real probe runs by default);
//!   `AULA_CPU_VARIANT=<name>` loads that variant if the CPU can run it (for
//!   benchmarks); `AULA_BACKENDS_DIR` names the directory of the modules.
//! * **Other backends** found beside the CPU variants (CUDA, Vulkan, …) are
//!   loaded through ggml's own score check.
//!
//! What was chosen, and why the others were not, is a [`CpuReport`]: logged by
//! `aula engine`, in its `/health`, and printed by `aula doctor`.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub variant: String,
    /// ggml's score for this CPU; 0 means it cannot run here.
    pub score: i32,
    /// Why it was not loaded, when it was eligible by score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// What the engine runs on.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// The CPU variant loaded (`haswell`, `icelake`, `sapphirerapids`, `armv9.2_2`, …).
    pub variant: String,
    /// The module it came from.
    pub library: String,
    /// The instruction-set features the loaded variant uses, as ggml names them.
    pub features: Vec<String>,
    pub amx: AmxState,
    /// Every CPU variant found, best score first.
    pub candidates: Vec<Candidate>,
    /// The compute devices ggml sees after loading (`CPU`, and GPUs when built with them).
    pub devices: Vec<String>,
    /// On Arm: the features the kernel reports (what ggml's score reads)
    /// and the variant ggml's rule picks for them among those built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm: Option<ArmChoice>,
}

/// Why an Arm variant was chosen: this CPU's features and ggml's rule.
#[derive(Debug, Clone, Serialize)]
pub struct ArmChoice {
    pub features: arm::ArmFeatures,
    /// The variant ggml's rule picks for these features, and its score.
    pub expected: Option<(String, i32)>,
}

impl CpuReport {
    /// One line for a person, naming anything a failed probe turned off.
    pub fn hint(&self) -> Option<String> {
        match &self.amx {
            AmxState::ProbeFailed { reason } => Some(format!(
                "this CPU lists AMX but AMX failed its probe ({reason}): \
                 llama.cpp's AMX kernels are off and `{}` runs instead; \
                 prefill would be faster with working AMX kernels",
                self.variant
            )),
            AmxState::Disabled { by } => Some(format!(
                "AMX is listed but turned off by {by}; `{}` runs instead",
                self.variant
            )),
            _ => None,
        }
    }
}

static REPORT: OnceLock<CpuReport> = OnceLock::new();

/// Load the CPU backend (once per process) and say what was loaded.
pub fn load() -> anyhow::Result<&'static CpuReport> {
    if let Some(r) = REPORT.get() {
        return Ok(r);
    }
    let report = select_and_load()?;
    Ok(REPORT.get_or_init(|| report))
}

/// The report, if [`load`] has run.
pub fn report() -> Option<&'static CpuReport> {
    REPORT.get()
}

const VARIANT_PREFIX: &str = "libggml-cpu-";
const MODULE_SUFFIX: &str = ".so";

/// Directories searched for the modules, in order.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("AULA_BACKENDS_DIR") {
        dirs.push(PathBuf::from(d));
        return dirs;
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(parent) = exe.parent()
    {
        dirs.push(parent.to_path_buf());
        dirs.push(parent.join("backends"));
    }
    if let Some(d) = llama_cpp_sys_2::BACKENDS_DIR {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// The GPU backend modules built beside the CPU variants (`libggml-cuda.so`,
/// `libggml-vulkan.so`, …): what this build can offload to.
pub fn gpu_modules() -> Vec<String> {
    let mut out: Vec<String> = search_dirs()
        .iter()
        .flat_map(|d| list_modules(d))
        .filter(|p| variant_name(p).is_none())
        .filter_map(|p| p.file_name().and_then(|f| f.to_str()).map(String::from))
        .filter(|n| n != "libggml-base.so" && n != "libggml.so")
        .collect();
    out.sort();
    out.dedup();
    out
}

fn variant_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let rest = file.strip_prefix(VARIANT_PREFIX)?;
    Some(rest.strip_suffix(MODULE_SUFFIX)?.to_string())
}

fn list_modules(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("libggml-") && f.ends_with(MODULE_SUFFIX))
        })
        .collect();
    v.sort();
    v
}

/// Whether a GPU module should be loaded: ggml's rule (`ggml_backend_load`
/// skips a module only when its score function returns 0; a module without
/// one, as ggml's CUDA and Vulkan modules are, is loaded). A module that
/// cannot even be opened (its driver library missing) is loaded anyway, so
/// that the reason is reported.
fn gpu_module_runs_here(path: &Path) -> bool {
    !matches!(module_score(path), Ok(Some(0)))
}

/// ggml's own verdict for a module: 0 when this CPU cannot run it; `None`
/// when the module has no score function.
fn module_score(path: &Path) -> anyhow::Result<Option<i32>> {
    // SAFETY: loading a ggml backend module runs no code of ours; ggml
    // compiles its score function so that it runs on any CPU of the
    // architecture (llama.cpp's own loader does the same).
    let lib = unsafe { libloading::Library::new(path) }
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the symbol has this signature in every ggml backend module.
    let score: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
        match unsafe { lib.get(b"ggml_backend_score\0") } {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
    // SAFETY: a plain function without arguments.
    Ok(Some(unsafe { score() }))
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml returns NUL-terminated strings that live as long as the backend.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The features a loaded backend registration reports (`ggml_backend_get_features`).
fn reg_features(reg: llama_cpp_sys_2::ggml_backend_reg_t) -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: `reg` is a live registration; the name is NUL-terminated.
    let f = unsafe {
        llama_cpp_sys_2::ggml_backend_reg_get_proc_address(
            reg,
            c"ggml_backend_get_features".as_ptr(),
        )
    };
    if f.is_null() {
        return out;
    }
    // SAFETY: ggml documents this signature for "ggml_backend_get_features".
    let get: unsafe extern "C" fn(
        llama_cpp_sys_2::ggml_backend_reg_t,
    ) -> *const llama_cpp_sys_2::ggml_backend_feature = unsafe { std::mem::transmute(f) };
    // SAFETY: the list is terminated by an entry whose name is NULL.
    let mut p = unsafe { get(reg) };
    while !p.is_null() {
        // SAFETY: p points into the list, which ends at a NULL name.
        let feat = unsafe { &*p };
        if feat.name.is_null() {
            break;
        }
        let (name, value) = (cstr(feat.name), cstr(feat.value));
        out.push(if value == "1" {
            name
        } else {
            format!("{name}={value}")
        });
        // SAFETY: still inside the list (the terminator has not been reached).
        p = unsafe { p.add(1) };
    }
    out
}

fn load_module(path: &Path) -> anyhow::Result<llama_cpp_sys_2::ggml_backend_reg_t> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| anyhow!("{} contains a NUL byte", path.display()))?;
    // SAFETY: a NUL-terminated path; ggml checks the module's score itself.
    let reg = unsafe { llama_cpp_sys_2::ggml_backend_load(c.as_ptr()) };
    if reg.is_null() {
        bail!("ggml could not load {}", path.display());
    }
    Ok(reg)
}

fn select_and_load() -> anyhow::Result<CpuReport> {
    let dirs = search_dirs();
    let Some((dir, modules)) = dirs.iter().find_map(|d| {
        let m = list_modules(d);
        m.iter()
            .any(|p| variant_name(p).is_some())
            .then(|| (d.clone(), m))
    }) else {
        bail!(
            "no llama.cpp CPU backend (libggml-cpu-*.so) in {}; build Aula with scripts/setup.sh, \
             and keep the libraries beside the binary when copying it",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let forced = std::env::var("AULA_CPU_VARIANT")
        .ok()
        .filter(|v| !v.is_empty());
    let mut candidates: Vec<(Candidate, PathBuf)> = Vec::new();
    for p in modules.iter() {
        let Some(variant) = variant_name(p) else {
            continue;
        };
        let score = module_score(p).ok().flatten().unwrap_or(0);
        candidates.push((
            Candidate {
                variant,
                score,
                skipped: None,
            },
            p.clone(),
        ));
    }
    candidates.sort_by(|a, b| {
        b.0.score
            .cmp(&a.0.score)
            .then(a.0.variant.cmp(&b.0.variant))
    });
    if let Some(f) = &forced
        && !candidates.iter().any(|(c, _)| &c.variant == f)
    {
        bail!(
            "AULA_CPU_VARIANT={f}: no such CPU variant in {} (there are: {})",
            dir.display(),
            candidates
                .iter()
                .map(|(c, _)| c.variant.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let listed = amx_listed();
    let mut amx: Option<AmxState> = None;
    let mut chosen: Option<(usize, Vec<String>)> = None;
    for (i, (cand, path)) in candidates.iter_mut().enumerate() {
        if cand.score <= 0 {
            continue;
        }
        if let Some(f) = &forced
            && &cand.variant != f
        {
            cand.skipped = Some("AULA_CPU_VARIANT names another variant".into());
            continue;
        }
        let reg = match load_module(path) {
            Ok(r) => r,
            Err(e) => {
                cand.skipped = Some(format!("{e:#}"));
                continue;
            }
        };
        let features = reg_features(reg);
        if features.iter().any(|f| f.starts_with("AMX")) {
            let state = amx
                .get_or_insert_with(|| amx_state(listed, Some(path)))
                .clone();
            if state != AmxState::Works {
                // SAFETY: `reg` came from ggml_backend_load and nothing uses it yet.
                unsafe { llama_cpp_sys_2::ggml_backend_unload(reg) };
                cand.skipped = Some(match state {
                    AmxState::ProbeFailed { reason } => {
                        format!("uses AMX, which failed its probe: {reason}")
                    }
                    AmxState::Disabled { by } => format!("uses AMX, turned off by {by}"),
                    _ => "uses AMX, which this CPU does not list".into(),
                });
                continue;
            }
        }
        chosen = Some((i, features));
        break;
    }
    let Some((i, features)) = chosen else {
        if let Some(f) = forced {
            bail!("AULA_CPU_VARIANT={f} cannot run on this CPU");
        }
        bail!(
            "none of the llama.cpp CPU variants in {} can run on this CPU: {}",
            dir.display(),
            candidates
                .iter()
                .map(|(c, _)| format!(
                    "{} ({})",
                    c.variant,
                    c.skipped.clone().unwrap_or_else(|| "score 0".into())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    // Where no AMX variant was tried (one was forced, or none was built),
    // AMX is reported as listed or not, without a probe.
    let amx = match amx {
        Some(a) => a,
        None if !listed => AmxState::NotListed,
        None => AmxState::Disabled {
            by: "the choice of a variant without AMX".into(),
        },
    };

    // Other backends (GPU) beside the CPU variants, as ggml's own loader
    // treats them: loaded unless a score function says this machine cannot
    // run it. The GPU modules (CUDA, Vulkan) have no score function; one
    // that will not load (no driver library) is said and skipped.
    for p in modules.iter().filter(|p| variant_name(p).is_none()) {
        let name = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if name == "libggml-base.so" || name == "libggml.so" {
            continue;
        }
        if gpu_module_runs_here(p)
            && let Err(e) = load_module(p)
        {
            tracing::warn!("{e:#}");
        }
    }

    let (cand, path) = &candidates[i];
    let arm = arm::detect().map(|features| {
        let built: Vec<String> = candidates.iter().map(|(c, _)| c.variant.clone()).collect();
        ArmChoice {
            features,
            expected: arm::expected_variant(&built, &features),
        }
    });
    Ok(CpuReport {
        variant: cand.variant.clone(),
        library: path.display().to_string(),
        features,
        amx,
        devices: devices(),
        candidates: candidates.into_iter().map(|(c, _)| c).collect(),
        arm,
    })
}

fn devices() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: ggml's device registry is initialised and only read here.
    let n = unsafe { llama_cpp_sys_2::ggml_backend_dev_count() };
    for i in 0..n {
        // SAFETY: i < count.
        let dev = unsafe { llama_cpp_sys_2::ggml_backend_dev_get(i) };
        if dev.is_null() {
            continue;
        }
        // SAFETY: dev is a live device.
        let (name, desc) = unsafe {
            (
                cstr(llama_cpp_sys_2::ggml_backend_dev_name(dev)),
                cstr(llama_cpp_sys_2::ggml_backend_dev_description(dev)),
            )
        };
        out.push(if desc.is_empty() || desc == name {
            name
        } else {
            format!("{name}: {desc}")
        });
    }
    out
}

/// The environment variable that turns `aula` into the probe child.
pub const PROBE_ENV: &str = "AULA_CPU_PROBE";

/// Exit codes of the probe child.
mod code {
    pub const OK: i32 = 0;
    pub const NO_AMX_BUFFER: i32 = 3;
    pub const WRONG: i32 = 4;
    pub const SETUP: i32 = 5;
}

/// Run `exe` (the `aula` binary) as the probe child for the CPU variant in
/// `library`, and interpret how it ended. `force_fail` makes the child
/// execute an illegal instruction before anything else.
pub fn probe_variant(exe: &Path, library: &Path, force_fail: bool) -> Result<(), String> {
    let mut cmd = std::process::Command::new(exe);
    cmd.env(PROBE_ENV, library)
        .env("AULA_AMX_PROBE", if force_fail { "force-fail" } else { "" })
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the probe {}: {e}", exe.display()))?;
    // Read what it says while it runs (a full pipe must not block it).
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = Vec::new();
            let _ = e.by_ref().take(1 << 20).read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the probe hung for 60 s".into());
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for the probe failed: {e}")),
        }
    };
    let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    let detail = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGILL => "SIGILL, illegal instruction",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            _ => "a signal",
        };
        return Err(format!(
            "ggml's AMX kernel was killed by signal {sig} ({name})"
        ));
    }
    match status.code() {
        Some(code::OK) => Ok(()),
        Some(code::NO_AMX_BUFFER) => Err(format!(
            "ggml offers no AMX buffer (the kernel refused the tile state?) {detail}"
        )
        .trim()
        .to_string()),
        Some(code::WRONG) => Err(format!("ggml's AMX kernel gave a wrong product: {detail}")),
        Some(n) => Err(format!("the probe exited with {n}: {detail}")),
        None => Err("the probe ended abnormally".into()),
    }
}

/// When this process is the probe child (`AULA_CPU_PROBE` names a module),
/// run the probe and return the exit code; otherwise None. `aula` calls this
/// first thing in `main`.
pub fn run_probe_if_asked() -> Option<i32> {
    let library = std::env::var_os(PROBE_ENV)?;
    // A fault here is an expected answer, not a crash worth a core file.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct only limits this process.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
    }
    if std::env::var("AULA_AMX_PROBE").is_ok_and(|v| v == "force-fail") {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: deliberately raises SIGILL, which ends this child process.
        unsafe {
            core::arch::asm!("ud2", options(nomem, nostack));
        }
    }
    Some(match probe::run(Path::new(&library)) {
        Ok(()) => code::OK,
        Err((c, msg)) => {
            eprintln!("{msg}");
            c
        }
    })
}

/// The probe child's work, in a fresh process.
mod probe;

mod amx;
pub mod arm;
/// The probe's answer, kept until the next boot (or a rebuilt module).
mod cache;
pub use amx::*;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// ggml's GPU modules (CUDA, Vulkan) have no score function: they are
    /// loaded (a library without `ggml_backend_score` stands in for one).
    /// The CPU variants' score decides for them.
    #[test]
    fn modules_without_a_score_are_loaded() {
        let plain = Path::new("libm.so.6");
        assert_eq!(module_score(plain).unwrap(), None);
        assert!(gpu_module_runs_here(plain));
        // One that cannot be opened is tried, so that its error is said.
        assert!(gpu_module_runs_here(Path::new(
            "/nonexistent/libggml-cuda.so"
        )));
    }

    #[test]
    fn variant_names_come_from_file_names() {
        assert_eq!(
            variant_name(Path::new("/x/libggml-cpu-haswell.so")).as_deref(),
            Some("haswell")
        );
        assert_eq!(
            variant_name(Path::new("libggml-cpu-armv9.2_2.so")).as_deref(),
            Some("armv9.2_2")
        );
        assert_eq!(variant_name(Path::new("libggml-cuda.so")), None);
        assert_eq!(variant_name(Path::new("libggml-base.so")), None);
    }

    #[test]
    fn hints_name_what_was_turned_off() {
        let mut r = CpuReport {
            variant: "icelake".into(),
            library: String::new(),
            features: vec![],
            amx: AmxState::NotListed,
            candidates: vec![],
            devices: vec![],
            arm: None,
        };
        assert_eq!(r.hint(), None);
        r.amx = AmxState::ProbeFailed {
            reason: "SIGILL".into(),
        };
        let h = r.hint().unwrap();
        assert!(h.contains("AMX") && h.contains("icelake"), "{h}");
    }
}
