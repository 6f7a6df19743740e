//! Every sample in `tests/data/tool-call-samples.json` (model outputs in the
//! formats [`aula_protocol::tool_parse`] reads, each with its source) parsed
//! and compared with what it must give; all mismatches are reported at once.

use aula_protocol::tool_parse::parse;
use serde_json::Value;
use std::collections::BTreeMap;

fn text_field(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

#[test]
fn recorded_samples_parse_as_expected() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tool-call-samples.json"
    );
    let raw = std::fs::read_to_string(path).expect("the samples file");
    let doc: Value = serde_json::from_str(&raw).expect("the samples file is JSON");
    let samples = doc["samples"].as_array().expect("a `samples` list");
    let mut mismatches = Vec::new();
    let mut per_format: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples {
        let id = s["id"].as_str().expect("an id");
        let format = s["format"].as_str().expect("a format");
        *per_format.entry(format.to_string()).or_default() += 1;
        let source = &s["source"];
        assert!(
            source["repository"].is_string()
                && source["path"].is_string()
                && source["commit"].as_str().is_some_and(|c| c.len() == 40),
            "{id}: a source with repository, path and commit"
        );
        let text = s["text"].as_str().expect("a text");
        let tools: Vec<&str> = s["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t.as_str().expect("a tool name"))
            .collect();
        let want = &s["expected"];
        let got = parse(text, &tools);
        let mut wrong = Vec::new();
        let want_content = text_field(&want["content"]);
        if got.content != want_content {
            wrong.push(format!(
                "content {:?}, expected {want_content:?}",
                got.content
            ));
        }
        let want_reasoning = text_field(&want["reasoning"]);
        if got.reasoning != want_reasoning {
            wrong.push(format!(
                "reasoning {:?}, expected {want_reasoning:?}",
                got.reasoning
            ));
        }
        let want_calls: Vec<(String, Value)> = want["calls"]
            .as_array()
            .expect("expected calls")
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().expect("a name").to_string(),
                    c["arguments"].clone(),
                )
            })
            .collect();
        let got_calls: Vec<(String, Value)> = got
            .calls
            .iter()
            .map(|(n, a)| {
                let args = serde_json::from_str(a)
                    .unwrap_or_else(|e| panic!("{id}: arguments {a:?} are not JSON: {e}"));
                (n.clone(), args)
            })
            .collect();
        if got_calls != want_calls {
            wrong.push(format!("calls {got_calls:?}, expected {want_calls:?}"));
        }
        if !wrong.is_empty() {
            mismatches.push(format!("{id} ({format}): {}", wrong.join("; ")));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} samples parse wrongly:\n{}",
        mismatches.len(),
        samples.len(),
        mismatches.join("\n")
    );
    // Every format the parser reads has samples, well-formed and malformed.
    for f in [
        "harmony",
        "hermes",
        "llama3-json",
        "mistral",
        "deepseek-v3",
        "deepseek-v3.1",
        "granite",
    ] {
        assert!(per_format.get(f).is_some_and(|n| *n >= 3), "{f}: samples");
        let malformed = samples
            .iter()
            .filter(|s| s["format"] == f && s["expected"]["calls"] == Value::Array(vec![]))
            .count();
        assert!(malformed >= 1, "{f}: a sample that is not a call");
    }
}
