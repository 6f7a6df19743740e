//! The request parsers every body from a client goes through (gateway and
//! engine): any bytes give a request or a 400, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aula_protocol::peek_route(data);
    if let Ok((_, obj)) = aula_protocol::peek_admission(data) {
        let _ = aula_protocol::parse_chat_object(&obj);
        let _ = aula_protocol::parse_completion_object(&obj);
        let _ = aula_protocol::parse_embeddings_object(&obj);
    }
    let _ = aula_protocol::parse_chat(data);
    let _ = aula_protocol::parse_completion(data);
    let _ = aula_protocol::parse_embeddings(data);
});
