//! `aula bench`: the load generator every speed and fairness claim in Aula is
//! measured with. It drives any OpenAI-compatible server (Aula, vLLM,
//! llama-server, ...) with `concurrency` workers spread over `users` simulated
//! users, and reports time to first token, inter-token latency and end-to-end
//! latency percentiles, request and token throughput, errors by kind, and a
//! per-user breakdown.

mod report;
mod run;

pub use report::{Rates, Report, Summary};
pub use run::{BenchConfig, Limit, run};
