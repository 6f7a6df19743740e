//! The authorization matrix (hardening 4): every route × every kind of
//! caller → the expected status, from one table. The gateway runs with
//! Aula keys, a trusted front end and a (stand-in) JupyterHub; the engine is
//! the `openai-mock` stand-in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// The callers, in the table's column order.
const CALLERS: [&str; 11] = [
    "nobody",
    "student",
    "other student",
    "teacher",
    "admin",
    "front end for a student",
    "front end for a teacher",
    "front end for an admin",
    "expired key",
    "revoked key",
    "JupyterHub token",
];

#[rustfmt::skip]
/// (method, path, expected status per caller in `CALLERS` order).
const MATRIX: &[(&str, &str, [u16; 11])] = &[
    //                                  nobody stud other teach admin fe-s fe-t fe-a  exp  rev  hub
    ("POST", "/v1/chat/completions", [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    ("POST", "/v1/completions",      [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    ("POST", "/v1/embeddings",       [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    ("GET", "/v1/models",            [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    ("GET", "/healthz",              [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET", "/readyz",               [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET", "/metrics",              [401, 403, 403, 200, 200, 403, 200, 200, 401, 401, 403]),
    ("GET", "/openapi.json",         [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET", "/admin/ps",             [401, 403, 403, 403, 200, 403, 403, 200, 401, 401, 403]),
    ("POST", "/admin/reload",        [401, 403, 403, 403, 200, 403, 403, 200, 401, 401, 403]),
    ("POST", "/admin/load/mock",     [401, 403, 403, 403, 404, 403, 403, 404, 401, 401, 403]),
    ("POST", "/admin/unload/mock",   [401, 403, 403, 403, 404, 403, 403, 404, 401, 401, 403]),
    // Files: a JSON body is not an upload (400) once the caller is known.
    ("POST", "/v1/files",            [401, 400, 400, 400, 400, 400, 400, 400, 401, 401, 400]),
    ("GET", "/v1/files",             [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    // ada's file: hers (and her front end's) only; 404 for everyone else.
    ("GET", "/v1/files/{file_id}",   [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("GET", "/v1/files/{file_id}/content", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    // Vector stores: anyone known may make one and list theirs.
    ("POST", "/v1/vector_stores",    [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    ("GET", "/v1/vector_stores",     [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    // ada's store (not shared): hers only; 404 for everyone else, admins too.
    ("GET", "/v1/vector_stores/{vector_store_id}", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("POST", "/v1/vector_stores/{vector_store_id}", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("POST", "/v1/vector_stores/{vector_store_id}/files", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("GET", "/v1/vector_stores/{vector_store_id}/files", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("GET", "/v1/vector_stores/{vector_store_id}/files/{file_id}", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("POST", "/v1/vector_stores/{vector_store_id}/files/{file_id}", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("POST", "/v1/vector_stores/{vector_store_id}/file_batches", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("GET", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("GET", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("POST", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("POST", "/v1/vector_stores/{vector_store_id}/search", [401, 200, 404, 404, 404, 200, 404, 404, 401, 401, 404]),
    ("POST", "/v1/responses",        [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    // Fine-tuning: anyone known may ask (here no model can be fine-tuned:
    // 400) and list their jobs; no one sees a job that is not theirs.
    ("POST", "/v1/fine_tuning/jobs", [401, 400, 400, 400, 400, 400, 400, 400, 401, 401, 400]),
    ("GET", "/v1/fine_tuning/jobs",  [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}", [401, 404, 404, 404, 404, 404, 404, 404, 401, 401, 404]),
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel", [401, 404, 404, 404, 404, 404, 404, 404, 401, 401, 404]),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", [401, 404, 404, 404, 404, 404, 404, 404, 401, 401, 404]),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", [401, 404, 404, 404, 404, 404, 404, 404, 401, 401, 404]),
    ("GET", "/v1/models/mock",       [401, 200, 200, 200, 200, 200, 200, 200, 401, 401, 200]),
    // Only fine-tuned models can be deleted.
    ("DELETE", "/v1/models/mock",    [401, 404, 404, 404, 404, 404, 404, 404, 401, 401, 404]),
    // ada detaches her file, then deletes the store: gone for her front end after.
    ("DELETE", "/v1/vector_stores/{vector_store_id}/files/{file_id}", [401, 200, 404, 404, 404, 404, 404, 404, 401, 401, 404]),
    ("DELETE", "/v1/vector_stores/{vector_store_id}", [401, 200, 404, 404, 404, 404, 404, 404, 401, 401, 404]),
    // Last: ada deletes it; after that it is gone for her front end too.
    ("DELETE", "/v1/files/{file_id}", [401, 200, 404, 404, 404, 404, 404, 404, 401, 401, 404]),
];

/// The body sent to a route (`path` as the table writes it).
fn body_for(path: &str, file_id: &str) -> Value {
    match path {
        "/v1/chat/completions" => chat_body("mock", "hi", 2),
        "/v1/completions" => json!({"model": "mock", "prompt": "hi", "max_tokens": 2}),
        "/v1/embeddings" => json!({"model": "mock", "input": "hi"}),
        "/v1/responses" => json!({"model": "mock", "input": "hi", "max_output_tokens": 2}),
        "/v1/vector_stores/{vector_store_id}/files" => json!({"file_id": file_id}),
        "/v1/vector_stores/{vector_store_id}/file_batches" => json!({"file_ids": [file_id]}),
        "/v1/vector_stores/{vector_store_id}/search" => {
            json!({"query": "week", "search_mode": "lexical"})
        }
        _ => json!({}),
    }
}

fn call(method: &str, url: &str, headers: &[(String, String)], body: &Value) -> (u16, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let r = if method == "POST" {
        req.set("Content-Type", "application/json")
            .send_string(&body.to_string())
    } else {
        req.call()
    };
    match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

#[test]
fn every_route_answers_every_caller_as_the_table_says() {
    let mock = spawn_mock(0);
    let (_hub, hub_url) = counting_hub(0);
    let home = temp_home("authz");
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[[models]]\nname = \"mock\"\nurl = \"{}\"\n\n[auth]\ntrusted = [\"webui\"]\nverified = [\"webui\"]\n\n\
             [jupyterhub]\nurl = \"{hub_url}\"\napi_token = \"svc\"\n",
            mock.url
        ),
    )
    .unwrap();
    let key = |user: &str, role: &str, extra: &[&str]| {
        let (ok, _, err) = run_aula(&["users", "add", user, "--role", role], &home);
        assert!(ok, "{err}");
        let mut args = vec!["keys", "create", user];
        args.extend_from_slice(extra);
        let (ok, out, err) = run_aula(&args, &home);
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let student = key("ada", "student", &[]);
    let other = key("bob", "student", &[]);
    let teacher = key("tea", "teacher", &[]);
    let admin = key("adm", "admin", &[]);
    let front_end = key("webui", "admin", &[]);
    let expired = key("old", "student", &["--expires", "0.00001"]);
    let revoked = key("gone", "student", &[]);
    let (ok, _, err) = run_aula(&["keys", "revoke", "gone"], &home);
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_millis(1500)); // the short key expires

    let bearer = |k: &str| vec![("Authorization".to_string(), format!("Bearer {k}"))];
    let acting = |who: &str| {
        let mut h = bearer(&front_end);
        h.push(("X-OpenWebUI-User-Email".into(), who.into()));
        h
    };
    let headers: [Vec<(String, String)>; 11] = [
        vec![],
        bearer(&student),
        bearer(&other),
        bearer(&teacher),
        bearer(&admin),
        acting("ada"),
        acting("tea"),
        acting("adm"),
        bearer(&expired),
        bearer(&revoked),
        bearer("good-hubstudent"),
    ];

    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    // A file of ada's, for the file routes.
    let file_id = upload(&s.url, &student, "notes.txt", b"week 1", "user_data");
    // A vector store of ada's holding it, and a batch, for the store routes.
    let r = post_auth(
        &format!("{}/v1/vector_stores", s.url),
        Some(&student),
        &json!({"name": "ada"}),
    );
    let store_id = r.body["id"].as_str().unwrap().to_string();
    let r = post_auth(
        &format!("{}/v1/vector_stores/{store_id}/file_batches", s.url),
        Some(&student),
        &json!({"file_ids": [file_id]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let batch_id = r.body["id"].as_str().unwrap().to_string();
    let mut wrong = Vec::new();
    for (method, template, want) in MATRIX {
        let path = template
            .replace("{file_id}", &file_id)
            .replace("{vector_store_id}", &store_id)
            .replace("{batch_id}", &batch_id)
            .replace("{fine_tuning_job_id}", "ftjob-none");
        for (i, caller) in CALLERS.iter().enumerate() {
            let (got, text) = call(
                method,
                &format!("{}{path}", s.url),
                &headers[i],
                &body_for(template, &file_id),
            );
            if got != want[i] {
                wrong.push(format!(
                    "{method} {path} as {caller}: {got}, want {} ({text:.200})",
                    want[i]
                ));
            }
            // /readyz names the models only to staff.
            if path == "/readyz" {
                let detail = serde_json::from_str::<Value>(&text).unwrap()["models"].is_object();
                let staff = matches!(i, 3 | 4 | 6 | 7);
                if detail != staff {
                    wrong.push(format!("/readyz as {caller}: model detail {detail}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cells differ:\n{}",
        wrong.len(),
        MATRIX.len() * CALLERS.len(),
        wrong.join("\n")
    );

    // The table covers every route the gateway describes.
    let doc: Value =
        serde_json::from_str(&call("GET", &format!("{}/openapi.json", s.url), &[], &json!({})).1)
            .unwrap();
    let mut described: Vec<String> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            described.push(format!(
                "{} {}",
                m.to_uppercase(),
                path.replace("{model}", "mock").replace("{file_id}", "FILE")
            ));
        }
    }
    let mut tested: Vec<String> = MATRIX
        .iter()
        .map(|(m, p, _)| format!("{m} {}", p.replace("{file_id}", "FILE")))
        .collect();
    described.sort();
    tested.sort();
    described.dedup();
    // load and unload are one path each with {model}; the table has both.
    assert_eq!(described, tested);

    drop(s);
}
