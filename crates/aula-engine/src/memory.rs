//! What llama.cpp allocated at load: it logs each buffer it creates
//! ("model buffer size = X MiB", "KV buffer size", "compute buffer size",
//! "output buffer size"). Aula captures llama.cpp's log while loading and adds
//! those lines up, so `/health` can report them and capacity plans can be
//! checked against what the runtime really did. The log prints MiB with two
//! decimals, so each figure is exact to about 10 KiB.

use serde::Serialize;
use std::ffi::{CStr, c_char, c_void};
use std::sync::Mutex;

static LOG: Mutex<String> = Mutex::new(String::new());
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

unsafe extern "C" fn log_callback(
    level: llama_cpp_sys_2::ggml_log_level,
    text: *const c_char,
    _: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string that lives for the call.
    let s = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if let Ok(mut log) = LOG.lock()
        && log.len() < 4 << 20
    {
        log.push_str(&s);
    }
    let important = level == llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR
        || level == llama_cpp_sys_2::GGML_LOG_LEVEL_WARN;
    if important || VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
        eprint!("{s}");
    }
}

/// Route llama.cpp's log into Aula's capture (errors and warnings still reach stderr).
pub fn install_log_capture(verbose: bool) {
    VERBOSE.store(verbose, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the callback is a plain function that lives for the whole program.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(log_callback), std::ptr::null_mut()) };
}

/// Take what has been logged so far.
pub fn take_log() -> String {
    LOG.lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct MemoryReport {
    /// Weights as llama.cpp placed them (sum of "model buffer size" lines
    /// other than the CPU repack one).
    pub model_buffer_bytes: u64,
    /// Copies of some weights that llama.cpp's CPU backend re-lays out for
    /// faster kernels ("CPU_REPACK model buffer", and with Intel AMX the
    /// "AMX model buffer"); the mapped originals stay
    /// in the page cache, so this is memory on top of the weights.
    pub repack_buffer_bytes: u64,
    /// Exact byte size of all weight tensors (`llama_model_size`).
    pub model_tensor_bytes: u64,
    /// KV cache (sum of "KV buffer size" lines; two for sliding-window models).
    pub kv_cache_bytes: u64,
    /// Scratch space for the compute graph.
    pub compute_buffer_bytes: u64,
    /// Logits/embeddings output buffer.
    pub output_buffer_bytes: u64,
    pub total_bytes: u64,
}

fn mib_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mib: f64 = num.parse().ok()?;
    Some((mib * 1024.0 * 1024.0).round() as u64)
}

/// Add up the buffer lines of a llama.cpp load log.
pub fn parse_load_log(log: &str, model_tensor_bytes: u64) -> MemoryReport {
    let mut r = MemoryReport {
        model_tensor_bytes,
        ..MemoryReport::default()
    };
    for line in log.lines() {
        if let Some(b) = mib_after(line, "model buffer size") {
            // CPU_REPACK and AMX buffers hold re-laid-out copies of weights
            // whose mapped originals stay: memory on top of the weights.
            if line.contains("REPACK") || line.contains("AMX model buffer") {
                r.repack_buffer_bytes += b;
            } else {
                r.model_buffer_bytes += b;
            }
        } else if let Some(b) = mib_after(line, "KV buffer size") {
            r.kv_cache_bytes += b;
        } else if let Some(b) = mib_after(line, "compute buffer size") {
            r.compute_buffer_bytes += b;
        } else if let Some(b) = mib_after(line, "output buffer size") {
            r.output_buffer_bytes += b;
        }
    }
    r.total_bytes =
        r.model_buffer_bytes + r.kv_cache_bytes + r.compute_buffer_bytes + r.output_buffer_bytes;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llama_cpp_lines() {
        let log = "load_tensors:   CPU_Mapped model buffer size =    98.35 MiB\n\
                   load_tensors:   CPU_REPACK model buffer size =    12.66 MiB\n\
                   llama_context:        CPU  output buffer size =     0.19 MiB\n\
                   llama_kv_cache:        CPU KV buffer size =    90.00 MiB\n\
                   llama_kv_cache_iswa: creating SWA KV cache, size = 1024 cells\n\
                   llama_kv_cache:        CPU KV buffer size =    10.00 MiB\n\
                   llama_context: CPU compute buffer size is   1.0000 MiB, matches expectation\n\
                   llama_context:        CPU compute buffer size =    66.51 MiB\n";
        let r = parse_load_log(log, 1);
        assert_eq!(r.model_buffer_bytes, (98.35f64 * 1048576.0).round() as u64);
        assert_eq!(r.kv_cache_bytes, 100 * 1048576);
        assert_eq!(
            r.compute_buffer_bytes,
            (66.51f64 * 1048576.0).round() as u64
        );
        assert_eq!(r.output_buffer_bytes, (0.19f64 * 1048576.0).round() as u64);
        assert_eq!(
            r.total_bytes,
            r.model_buffer_bytes
                + r.kv_cache_bytes
                + r.compute_buffer_bytes
                + r.output_buffer_bytes
        );
    }
}
