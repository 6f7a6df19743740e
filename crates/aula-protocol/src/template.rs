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

/// Where the template in use came from (reported by `/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    Gguf,
    BuiltinGemma,
    BuiltinChatml,
}

impl TemplateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateSource::Gguf => "gguf",
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
        env.add_template_owned(TEMPLATE_NAME, text)?;
        Ok(ChatTemplate {
            env,
            source,
            thinks,
            bos_token,
            eos_token,
        })
    }

    /// Render the conversation, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ApiError::Internal(format!("chat template: {e}")))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| match e.kind() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(list: &[(&str, &str)]) -> Vec<ChatMessage> {
        list.iter()
            .map(|(r, c)| ChatMessage {
                role: r.to_string(),
                content: c.to_string(),
            })
            .collect()
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
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("first must be user"), "{err}");
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
