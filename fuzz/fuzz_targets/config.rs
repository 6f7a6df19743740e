//! The configuration parser and validator (`aula.toml`): any text gives a
//! configuration or an error naming key and line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = aula_gateway::config::Config::parse(text, "fuzz.toml");
    }
});
