//! The chat-template renderer (templates come inside GGUF files): the input
//! is a template, a NUL byte, then a user message; any of it gives a prompt
//! or an error.
#![no_main]
use aula_protocol::ChatMessage;
use aula_protocol::template::ChatTemplate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (template, message) = text.split_once('\0').unwrap_or((&text, "hello"));
    let Ok(t) = ChatTemplate::new(
        Some(template.to_string()),
        "llama",
        "<s>".into(),
        "</s>".into(),
    ) else {
        return;
    };
    let messages = [
        ChatMessage {
            role: "system".into(),
            content: "Be brief.".into(),
        },
        ChatMessage {
            role: "user".into(),
            content: message.to_string(),
        },
    ];
    let _ = t.render(&messages);
});
