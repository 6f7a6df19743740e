//! Chat templates: the GGUF's own `tokenizer.chat_template` rendered with
//! minijinja, or, where a model has none, a built-in one chosen by its
//! architecture.

use crate::{ApiError, ChatMessage};
use minijinja::{Environment, ErrorKind, Value, context};

const TEMPLATE_NAME: &str = "chat";

/// Gemma's turn format (Gemma 2 and 3): the system prompt goes in front of the
/// first user turn, the assistant's role is called `model`.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set first_user_prefix = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

/// ChatML, the format used when a model has no template and no built-in one
/// for its architecture.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}";

/// How a model's own template writes tool calls, when it knows tools at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFormat {
    /// Hermes / Qwen: `<tool_call>\n{"name", "arguments"}\n</tool_call>`.
    Hermes,
    /// Llama 3.1-3.3: the answer is `{"name", "parameters"}`.
    Llama3,
    /// Another format (Mistral, DeepSeek, harmony, ...): read by the
    /// parsers, but a call cannot be forced in it.
    Other,
}

/// Where the template in use came from (reported by `/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    Gguf,
    /// `--chat-template-file`.
    File,
    BuiltinGemma,
    BuiltinChatml,
}

impl TemplateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateSource::Gguf => "gguf",
            TemplateSource::File => "file",
            TemplateSource::BuiltinGemma => "builtin:gemma",
            TemplateSource::BuiltinChatml => "builtin:chatml",
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    pub source: TemplateSource,
    /// The template writes or expects `<think>` blocks (reasoning models).
    pub thinks: bool,
    /// The template writes OpenAI's harmony format (gpt-oss): channels
    /// marked with control tokens.
    pub harmony: bool,
    /// The template renders `tools` and tool calls itself (None: tools are
    /// described in a system message and calls written as text).
    pub tools: Option<CallFormat>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Choose the template: the model's own if it has one, else a built-in by architecture.
    pub fn new(
        gguf_template: Option<String>,
        architecture: &str,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, minijinja::Error> {
        let (source, text) = match gguf_template {
            Some(t) if !t.trim().is_empty() => (TemplateSource::Gguf, t),
            _ if architecture.starts_with("gemma") => {
                (TemplateSource::BuiltinGemma, GEMMA_TEMPLATE.to_string())
            }
            _ => (TemplateSource::BuiltinChatml, CHATML_TEMPLATE.to_string()),
        };
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use it for "today's date" lines; a fixed clock-free
            // answer would lie. A format chrono cannot read is left as it is.
            match chrono::format::StrftimeItems::new(&fmt).parse() {
                Ok(items) => chrono::Utc::now()
                    .format_with_items(items.into_iter())
                    .to_string(),
                Err(_) => fmt,
            }
        });
        let thinks = text.contains("<think>");
        let tools = tool_support(&text);
        let harmony = text.contains("<|channel|>");
        env.add_template_owned(TEMPLATE_NAME, text)?;
        Ok(ChatTemplate {
            env,
            source,
            thinks,
            harmony,
            tools,
            bos_token,
            eos_token,
        })
    }

    /// Render the conversation, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
        self.render_with_tools(messages, None)
    }

    /// Render with `tools` (OpenAI's list of `{"type": "function",
    /// "function": {...}}`), for a template that knows them.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
    ) -> Result<String, ApiError> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ApiError::Internal(format!("chat template: {e}")))?;
        let base = context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        // `tools` is left undefined when none are offered: templates test
        // `tools is defined` as often as `if tools`.
        let ctx = match tools {
            Some(t) => context! { tools => Value::from_serialize(t), ..base },
            None => base,
        };
        tmpl.render(ctx).map_err(|e| match e.kind() {
            // The template itself refused the conversation (e.g. roles not alternating).
            ErrorKind::InvalidOperation => ApiError::invalid_param(
                "messages",
                format!(
                    "the model's chat template refused these messages: {}",
                    e.detail().unwrap_or("invalid conversation")
                ),
            ),
            _ => ApiError::invalid_param(
                "messages",
                format!("could not render the chat template: {e}"),
            ),
        })
    }
}

impl CallFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CallFormat::Hermes => "hermes",
            CallFormat::Llama3 => "llama3",
            CallFormat::Other => "other",
        }
    }
}

/// Whether a template renders tools itself, and how its model writes calls.
fn tool_support(text: &str) -> Option<CallFormat> {
    if !(text.contains("tools") && text.contains("tool_call")) {
        return None;
    }
    Some(if text.contains("<tool_call>") {
        CallFormat::Hermes
    } else if text.contains("<|start_header_id|>") && text.contains("\"parameters\"") {
        CallFormat::Llama3
    } else {
        CallFormat::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(list: &[(&str, &str)]) -> Vec<ChatMessage> {
        list.iter().map(|(r, c)| ChatMessage::text(r, *c)).collect()
    }

    #[test]
    fn gemma_builtin() {
        let t = ChatTemplate::new(None, "gemma3", "<bos>".into(), "<eos>".into()).unwrap();
        assert_eq!(t.source, TemplateSource::BuiltinGemma);
        let out = t
            .render(&msgs(&[
                ("system", "Be brief."),
                ("user", "Hi"),
                ("assistant", "Hello"),
                ("user", "Bye"),
            ]))
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn gguf_template_wins_and_raise_exception_is_a_400() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}\
                   {% for m in messages %}[{{ m.role }}]{{ m.content.strip() }}{% endfor %}";
        let t = ChatTemplate::new(Some(src.into()), "llama", String::new(), String::new()).unwrap();
        assert_eq!(t.source, TemplateSource::Gguf);
        assert_eq!(t.render(&msgs(&[("user", "  x ")])).unwrap(), "[user]x");
        let err = t.render(&msgs(&[("assistant", "x")])).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn a_template_that_knows_tools_renders_them_and_the_history_as_data() {
        let src = include_str!("../tests/data/hermes-tools.jinja");
        let t = ChatTemplate::new(Some(src.into()), "llama", String::new(), String::new()).unwrap();
        assert_eq!(t.tools, Some(CallFormat::Hermes));
        let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather",
            "description": "Weather", "parameters": {"type": "object"}}}]);
        let mut call = ChatMessage::text("assistant", "");
        call.tool_calls = vec![serde_json::json!({"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}})];
        let mut result = ChatMessage::text("tool", "Sunny");
        result.tool_call_id = Some("c1".into());
        let out = t
            .render_with_tools(
                &[ChatMessage::text("user", "Weather in Oslo?"), call, result],
                Some(&tools),
            )
            .unwrap();
        assert!(out.contains("<tools>\n{\"type\":\"function\""), "{out}");
        assert!(
            out.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Oslo\"}}\n</tool_call>"),
            "{out}"
        );
        assert!(
            out.contains("<tool_response>\nSunny\n</tool_response>"),
            "{out}"
        );
        assert!(out.ends_with("<|im_start|>assistant\n"), "{out}");
        // Without tools the same template renders a plain conversation.
        let plain = t.render(&msgs(&[("user", "Hi")])).unwrap();
        assert_eq!(
            plain,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        // Formats recognised from the template's text.
        assert_eq!(
            tool_support("{% if tools %}{{ tool_call }}<|start_header_id|>\"parameters\""),
            Some(CallFormat::Llama3)
        );
        assert_eq!(
            tool_support("{% for tool in tools %}[TOOL_CALLS]{{ message.tool_calls }}"),
            Some(CallFormat::Other)
        );
        assert_eq!(tool_support(CHATML_TEMPLATE), None);
        assert_eq!(tool_support(GEMMA_TEMPLATE), None);
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::new(None, "llama", String::new(), String::new()).unwrap();
        assert_eq!(
            t.render(&msgs(&[("user", "Hi")])).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn dates() {
        let t = ChatTemplate::new(
            Some(
                "{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%d %B %Y') }}|{{ strftime_now('%Q bad') }}"
                    .into(),
            ),
            "llama",
            String::new(),
            String::new(),
        )
        .unwrap();
        let out = t.render(&msgs(&[("user", "Hi")])).unwrap();
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        assert!(out.starts_with(&today), "{out}");
        assert!(out.ends_with("|%Q bad"), "{out}");
    }
}
