//! AMX on this machine: whether `cpuid` lists it, and its state from the
//! settings, the per-boot cache or the probe.

use super::*;

/// What happened to AMX on this machine.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AmxState {
    /// The CPU does not list AMX (or this is not x86-64).
    NotListed,
    /// Listed, and the probe multiplied two tiles correctly.
    Works,
    /// Listed, but the probe failed: the AMX kernels are not used.
    ProbeFailed { reason: String },
    /// Listed, and turned off by the named setting.
    Disabled { by: String },
}

/// One CPU variant found beside the binary.
/// Does `cpuid` list AMX tiles with int8 multiplies?
pub fn amx_listed() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let max = core::arch::x86_64::__cpuid(0).eax;
        if max < 7 {
            return false;
        }
        // Leaf 7 exists (checked above).
        let edx = core::arch::x86_64::__cpuid_count(7, 0).edx;
        (edx >> 24) & 1 == 1 && (edx >> 25) & 1 == 1
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AMX's state here: settings first, then the per-boot cache, then the probe.
pub(super) fn amx_state(listed: bool, library: Option<&Path>) -> AmxState {
    if !listed {
        return AmxState::NotListed;
    }
    if std::env::var("AULA_CPU_AMX").is_ok_and(|v| v == "off") {
        return AmxState::Disabled {
            by: "AULA_CPU_AMX=off".into(),
        };
    }
    let Some(library) = library else {
        return AmxState::NotListed;
    };
    let force_fail = std::env::var("AULA_AMX_PROBE").is_ok_and(|v| v == "force-fail");
    let exe = match std::env::current_exe() {
        Ok(e) if e.file_stem().is_some_and(|s| s == "aula") => e,
        _ => {
            return AmxState::ProbeFailed {
                reason: "only the `aula` program can run the AMX probe".into(),
            };
        }
    };
    if !force_fail && let Some(cached) = cache::read(library) {
        return cached;
    }
    let state = match probe_variant(&exe, library, force_fail) {
        Ok(()) => AmxState::Works,
        Err(reason) => AmxState::ProbeFailed { reason },
    };
    // Cached only as a definitive answer: it worked, or the kernel itself
    // faulted, computed wrongly or refused. A probe that could not start or
    // hung is tried again next time.
    let definitive = match &state {
        AmxState::Works => true,
        AmxState::ProbeFailed { reason } => {
            reason.contains("signal")
                || reason.contains("wrong")
                || reason.contains("no AMX buffer")
        }
        _ => false,
    };
    if !force_fail && definitive {
        cache::write(library, &state);
    }
    state
}
