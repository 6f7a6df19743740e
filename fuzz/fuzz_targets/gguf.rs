//! The GGUF header reader (`aula plan`, `aula serve` read the files admins
//! point them at): any bytes give a model description or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aula_planner::gguf::GgufFile::read(data, data.len() as u64);
});
