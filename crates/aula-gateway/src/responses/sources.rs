//! Search results in the prompt (as many as fit) and the citations found in the answer.

use super::*;

/// What a source costs in the prompt, roughly: characters per token, kept
/// low so that the estimate errs towards fewer sources.
pub(super) const CHARS_PER_TOKEN: usize = 3;

/// Results put in the prompt when the model's context is not known.
pub(super) const SOURCES_WITHOUT_CONTEXT: usize = 8;

/// The sources that fit the model's context next to the conversation.
pub(super) fn fitting(
    found: Vec<crate::rag::search::Found>,
    context: Option<u32>,
    p: &Parsed,
) -> Vec<crate::rag::search::Found> {
    let Some(ctx) = context else {
        return found.into_iter().take(SOURCES_WITHOUT_CONTEXT).collect();
    };
    let used: usize = p
        .messages
        .iter()
        .map(|m| m.content.as_deref().map_or(0, str::len))
        .sum::<usize>()
        + p.instructions.as_ref().map_or(0, String::len);
    let out_tokens = p.max_output_tokens.unwrap_or(256) as usize;
    // Room in characters, with a margin for the template and the header.
    let mut room = (ctx as usize)
        .saturating_sub(out_tokens + 128)
        .saturating_mul(CHARS_PER_TOKEN)
        .saturating_sub(used * 2);
    let mut out = Vec::new();
    for f in found {
        let cost = f.text.len() + f.filename.len() + 16;
        if cost > room {
            break;
        }
        room -= cost;
        out.push(f);
    }
    out
}

pub(super) fn sources_message(sources: &[crate::rag::search::Found]) -> String {
    let mut s = String::from(
        "Answer the question using the sources below. After each statement, cite the source it comes from by its number in square brackets, like [1]. If the sources do not answer the question, say so.\n",
    );
    for (i, f) in sources.iter().enumerate() {
        s.push_str(&format!(
            "\n[{}] ({})\n{}\n",
            i + 1,
            f.filename,
            f.text.trim()
        ));
    }
    s
}

/// `file_citation` annotations: one per `[n]` marker naming a source, at
/// its index (in characters); none found: the best source, at the end.
pub(super) fn annotations(text: &str, sources: &[crate::rag::search::Found]) -> Vec<Annotation> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j > i + 1 && j < chars.len() && chars[j] == ']' {
                let n: usize = chars[i + 1..j]
                    .iter()
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0);
                if let Some(f) = n.checked_sub(1).and_then(|k| sources.get(k)) {
                    out.push(citation(i, f));
                }
                i = j;
            }
        }
        i += 1;
    }
    if out.is_empty()
        && let Some(f) = sources.first()
    {
        out.push(citation(chars.len(), f));
    }
    out
}

fn citation(index: usize, f: &crate::rag::search::Found) -> Annotation {
    Annotation::FileCitation {
        index,
        file_id: f.file_id.clone(),
        filename: f.filename.clone(),
    }
}
