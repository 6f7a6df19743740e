//! `/v1/embeddings` with the real all-MiniLM-L6-v2 (converted to GGUF by
//! set-up): vectors against sentence-transformers' own, batching across
//! requests, every input shape and every error, and through `aula serve`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const MINILM_FILE: &str = "all-minilm-l6-v2.gguf";
const MINILM: &str = "all-minilm-l6-v2";

fn refs() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/minilm_refs.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn minilm_engine(extra: &[&str]) -> Proc {
    let path = model_path(MINILM_FILE);
    let mut args = vec!["engine", "--model", path.to_str().unwrap(), "--port", "0"];
    args.extend_from_slice(extra);
    spawn_aula(&args, None)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn embed(url: &str, body: &Value) -> Resp {
    post(&format!("{url}/v1/embeddings"), body)
}

fn vectors(r: &Resp) -> Vec<Vec<f64>> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            floats(&d["embedding"])
        })
        .collect()
}

/// Every reference sentence (short, long, non-English, code; one longer
/// than the model's 256 word pieces) against sentence-transformers' vector
/// of the same model: cosine >= 0.999 each, and usage counts exactly the
/// word pieces embedded. Two scripts that llama.cpp's WordPiece splits
/// differently from Hugging Face's tokenizer (Korean, Hindi) are marked in
/// the data and only checked for being unit vectors.
#[test]
fn minilm_matches_sentence_transformers() {
    let e = minilm_engine(&[]);
    let refs = refs();
    let cases = refs["cases"].as_array().unwrap();
    assert!(cases.len() >= 50);
    let mut checked = 0;
    for chunk in cases.chunks(16) {
        let texts: Vec<&str> = chunk.iter().map(|c| c["text"].as_str().unwrap()).collect();
        let r = embed(
            &e.url,
            &json!({"model": MINILM, "input": texts, "truncate_prompt_tokens": -1}),
        );
        let got = vectors(&r);
        assert_eq!(got.len(), chunk.len());
        let mut tokens = 0;
        let mut exact_tokens = true;
        for (c, v) in chunk.iter().zip(&got) {
            assert_eq!(v.len(), 384);
            let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "case {}: norm {norm}", c["id"]);
            if c["llama_cpp_tokenizer_differs"].as_bool() == Some(true) {
                exact_tokens = false;
                continue;
            }
            let cos = cosine(v, &floats(&c["vector"]));
            assert!(
                cos >= 0.999,
                "case {} ({}): cosine {cos}",
                c["id"],
                c["kind"]
            );
            tokens += c["n_tokens"].as_u64().unwrap().min(256);
            checked += 1;
        }
        if exact_tokens {
            assert_eq!(r.body["usage"]["prompt_tokens"], tokens, "{}", r.text);
            assert_eq!(r.body["usage"]["total_tokens"], tokens);
        }
    }
    assert!(checked >= 50, "{checked}");

    // The long case without truncation: a 400 with both numbers.
    let long = cases.iter().find(|c| c["truncated"] == true).unwrap();
    let r = embed(&e.url, &json!({"model": MINILM, "input": long["text"]}));
    assert_eq!(r.status, 400, "{}", r.text);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&long["n_tokens"].to_string()) && msg.contains("256"),
        "{msg}"
    );
    // Cut to a given number of tokens instead.
    let r = embed(
        &e.url,
        &json!({"model": MINILM, "input": long["text"], "truncate_prompt_tokens": 16}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["usage"]["prompt_tokens"], 16);
}

/// 64 single-sentence requests at once are batched together and give the
/// vectors each gives alone.
#[test]
fn concurrent_requests_share_batches_and_match_each_alone() {
    let e = minilm_engine(&[]);
    let refs = refs();
    let texts: Vec<String> = refs["cases"]
        .as_array()
        .unwrap()
        .iter()
        .cycle()
        .take(64)
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let alone: Vec<Vec<f64>> = texts
        .iter()
        .map(|t| {
            vectors(&embed(
                &e.url,
                &json!({"model": MINILM, "input": t, "truncate_prompt_tokens": -1}),
            ))
            .remove(0)
        })
        .collect();
    let before = get(&format!("{}/health", e.url)).body;
    let url = e.url.clone();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(texts.len()));
    let handles: Vec<_> = texts
        .iter()
        .cloned()
        .map(|t| {
            let url = url.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                vectors(&embed(
                    &url,
                    &json!({"model": MINILM, "input": [t], "truncate_prompt_tokens": -1}),
                ))
                .remove(0)
            })
        })
        .collect();
    for (h, a) in handles.into_iter().zip(&alone) {
        let v = h.join().unwrap();
        let cos = cosine(&v, a);
        assert!(cos > 0.99999, "batched vector differs: cosine {cos}");
    }
    let after = get(&format!("{}/health", e.url)).body;
    let inputs =
        after["inputs_embedded"].as_u64().unwrap() - before["inputs_embedded"].as_u64().unwrap();
    let batches = after["batches"].as_u64().unwrap() - before["batches"].as_u64().unwrap();
    assert_eq!(inputs, 64);
    assert!(
        batches < 64,
        "64 concurrent inputs ran in {batches} batches: not batched"
    );
    assert_eq!(after["pending_inputs"], 0);
}

/// Every input shape works; every bad request is a clear 400 (or 404) that
/// names its field, and the engine keeps serving.
#[test]
fn input_shapes_and_bad_requests() {
    let e = minilm_engine(&[]);
    let text = "The quick brown fox jumps over the lazy dog.";
    let one = vectors(&embed(&e.url, &json!({"model": MINILM, "input": text})));
    // cl100k_base ids of the same sentence (what tiktoken gives).
    let ids = json!([791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13]);
    for body in [
        json!({"model": MINILM, "input": [text]}),
        json!({"model": MINILM, "input": ids}),
        json!({"model": MINILM, "input": [ids]}),
        json!({"model": MINILM, "input": [text], "encoding_format": "float", "dimensions": 384, "user": "s1"}),
    ] {
        let v = vectors(&embed(&e.url, &body));
        assert_eq!(v.len(), 1);
        assert!(cosine(&v[0], &one[0]) > 0.99999, "{body}");
    }
    let two = vectors(&embed(
        &e.url,
        &json!({"model": MINILM, "input": [ids, ids]}),
    ));
    assert_eq!(two.len(), 2);

    let bad = |body: Value, status: u16, param: &str| {
        let r = embed(&e.url, &body);
        assert_eq!(r.status, status, "{body}: {}", r.text);
        if !param.is_empty() {
            assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.text);
        }
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    };
    bad(json!({"model": MINILM}), 400, "input");
    bad(json!({"model": MINILM, "input": ""}), 400, "input");
    bad(json!({"model": MINILM, "input": []}), 400, "input");
    bad(json!({"model": MINILM, "input": [[]]}), 400, "input");
    bad(json!({"model": MINILM, "input": [[[1]]]}), 400, "input");
    bad(json!({"model": MINILM, "input": ["a", 5]}), 400, "input");
    bad(
        json!({"model": MINILM, "input": {"text": "a"}}),
        400,
        "input",
    );
    bad(json!({"model": MINILM, "input": [5_000_000]}), 400, "input");
    bad(
        json!({"model": MINILM, "input": vec!["a"; 2049]}),
        400,
        "input",
    );
    bad(
        json!({"model": MINILM, "input": "a", "encoding_format": "hex"}),
        400,
        "encoding_format",
    );
    bad(
        json!({"model": MINILM, "input": "a", "dimensions": 128}),
        400,
        "dimensions",
    );
    bad(
        json!({"model": MINILM, "input": "a", "temperature": 0}),
        400,
        "temperature",
    );
    bad(json!({"model": "nope", "input": "a"}), 404, "");
    let r = post_raw(&format!("{}/v1/embeddings", e.url), "{\"model\": ");
    assert_eq!(r.status, 400);
    // A chat request to an embedding model.
    let r = post(
        &format!("{}/v1/chat/completions", e.url),
        &chat_body(MINILM, "hi", 4),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("/v1/embeddings"), "{}", r.text);
    // 2,048 inputs are fine; and the engine still serves.
    // (base64: 2,048 float vectors as JSON text pass the test client's size cap)
    let r = embed(
        &e.url,
        &json!({"model": MINILM, "input": vec!["a b"; 2048], "encoding_format": "base64"}),
    );
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(300)]);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2048);
    assert_eq!(r.body["data"][2047]["index"], 2047);
    assert_eq!(get(&format!("{}/health", e.url)).body["kind"], "embedding");
}

/// Through the gateway: embeddings next to a chat model, base64 and float
/// the same vectors, usage in the answer, the wrong kind of request a 400.
#[test]
fn served_by_the_gateway_next_to_a_chat_model() {
    let home = temp_home("embeddings-serve");
    for f in [SMOL_FILE, MINILM_FILE] {
        std::os::unix::fs::symlink(model_path(f), home.join("models").join(f)).unwrap();
    }
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    wait_for("both models ready", Duration::from_secs(120), || {
        get(&format!("{}/readyz", s.url)).status == 200
    });
    let models: Vec<String> = get(&format!("{}/v1/models", s.url)).body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(models.contains(&MINILM.to_string()) && models.contains(&SMOL.to_string()));
    // The printed example asks the chat model, not the embedding model.
    assert!(
        s.output().contains(&format!("\"model\": \"{SMOL}\"")),
        "{}",
        s.output()
    );

    let texts = json!(["Students share one GPU.", "Fair queues keep it fair."]);
    let f = embed(&s.url, &json!({"model": MINILM, "input": texts}));
    let fv = vectors(&f);
    assert!(f.body["usage"]["prompt_tokens"].as_u64().unwrap() > 4);
    let b = embed(
        &s.url,
        &json!({"model": MINILM, "input": texts, "encoding_format": "base64"}),
    );
    assert_eq!(b.status, 200, "{}", b.text);
    for (i, d) in b.body["data"].as_array().unwrap().iter().enumerate() {
        let bytes = decode_base64(d["embedding"].as_str().unwrap());
        let v: Vec<f64> = bytes
            .chunks(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        // Compared as f32 (serde_json's default number parsing may be one
        // f64 ulp off; Python's, which the client test uses, is exact).
        let as32 = |x: &Vec<f64>| x.iter().map(|y| *y as f32).collect::<Vec<f32>>();
        assert_eq!(as32(&v), as32(&fv[i]), "base64 and float vectors differ");
    }
    let r = embed(&s.url, &json!({"model": SMOL, "input": "hi"}));
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(
        &format!("{}/v1/chat/completions", s.url),
        &chat_body(MINILM, "hi", 4),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let r = embed(&s.url, &json!({"model": MINILM, "input": [[]]}));
    assert_eq!(r.status, 400, "{}", r.text);
    // Chat still works beside it.
    let r = post(
        &format!("{}/v1/chat/completions", s.url),
        &chat_body(SMOL, "hi", 3),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    drop(s);
}

/// Standard base64 (the test's own decoder, so the server's encoder is
/// checked against something independent).
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Pooling variants, against sentence-transformers with the same pooling
/// (no second embedding family is carried by any PyPI package that
/// llama.cpp can load, so the pooling code is checked this way): MiniLM
/// pooled by its [CLS] token and by its last token, via `--pooling`.
#[test]
fn pooling_variants_match_sentence_transformers() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/minilm_pooling_refs.json"
    );
    let refs: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let sentences = refs["sentences"].clone();
    for pooling in ["cls", "last", "mean"] {
        let e = minilm_engine(&["--pooling", pooling]);
        assert_eq!(
            get(&format!("{}/health", e.url)).body["embedding"]["pooling"],
            pooling
        );
        let got = vectors(&embed(
            &e.url,
            &json!({"model": MINILM, "input": sentences}),
        ));
        for (i, (v, r)) in got
            .iter()
            .zip(refs["poolings"][pooling].as_array().unwrap())
            .enumerate()
        {
            let cos = cosine(v, &floats(r));
            assert!(
                cos >= 0.999,
                "{pooling} pooling, sentence {i}: cosine {cos}"
            );
        }
        // And the poolings really differ from each other.
        if pooling != "mean" {
            let mean = floats(&refs["poolings"]["mean"][0]);
            assert!(
                cosine(&got[0], &mean) < 0.99,
                "{pooling} looks like mean pooling"
            );
        }
    }
}

/// A `url` engine (any OpenAI-compatible server: vLLM, llama-server
/// --embeddings, TEI — here an `aula engine` started by hand) serves
/// embeddings through the gateway under another name, validated there.
#[test]
fn url_engines_pass_embeddings_through() {
    let e = minilm_engine(&[]);
    let home = temp_home("embeddings-url");
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[[models]]\nname = \"course-embed\"\nurl = \"{}\"\nupstream_model = \"{MINILM}\"\n",
            e.url
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let direct = vectors(&embed(
        &e.url,
        &json!({"model": MINILM, "input": "Office hours are on Monday."}),
    ));
    let r = embed(
        &s.url,
        &json!({"model": "course-embed", "input": "Office hours are on Monday."}),
    );
    let via = vectors(&r);
    // The same model and input through another process: equal to the last
    // float bits in every run here, compared with a tolerance all the same.
    assert_eq!(via.len(), direct.len());
    for (a, b) in via.iter().zip(&direct) {
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6),
            "{a:?} vs {b:?}"
        );
    }
    assert!(r.body["usage"]["prompt_tokens"].as_u64().unwrap() > 2);
    // The gateway validates before forwarding.
    let r = embed(&s.url, &json!({"model": "course-embed", "input": [[]]}));
    assert_eq!(r.status, 400, "{}", r.text);
    drop(s);
}
