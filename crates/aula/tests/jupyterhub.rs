//! JupyterHub tokens as credentials, against a real JupyterHub (PyPI
//! `jupyterhub`, with its npm proxy `configurable-http-proxy`) started by the
//! test on loopback, configured as the README says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::hub::{AULA_SERVICE_TOKEN, Hub};
use common::*;
use serde_json::{Value, json};

#[test]
fn jupyterhub_tokens_are_accepted_only_with_access_to_the_service() {
    let mut hub = Hub::start();
    hub.admin("POST", "/users/alice", json!({}));
    hub.admin("POST", "/groups/cs101", json!({"users": ["alice"]}));
    let good = hub.token("alice", &["access:services!service=aula"]);
    let spare = hub.token("alice", &["access:services!service=aula"]);
    let no_access = hub.token("alice", &["read:users:name!user"]);

    let mock = spawn_mock(0);
    let home = temp_home("hub");
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[[models]]\nname = \"mock\"\nurl = \"{}\"\n\n[jupyterhub]\nurl = \"{}\"\napi_token = \"{AULA_SERVICE_TOKEN}\"\ncache_seconds = 30\ntimeout_seconds = 30\n",
            mock.url, hub.api
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});

    let r = post_auth(&url, Some(&good), &body);
    assert_eq!(r.status, 200, "{}", r.text);
    for bad in [no_access.as_str(), "not-a-hub-token"] {
        let r = post_auth(&url, Some(bad), &body);
        assert_eq!(r.status, 401, "{}", r.text);
        assert!(!r.text.contains(bad));
    }
    assert_eq!(post_auth(&url, None, &body).status, 401);
    let (ok, out, err) = run_aula(&["usage", "--by", "group", "--json"], &home);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "cs101" && r["ok"] == 1),
        "{rows}"
    );

    // The Hub goes down: a token Aula has not seen is never accepted; the
    // answer is a clear 503, not a 401 that would make a notebook give up.
    hub.stop();
    let r = post_auth(&url, Some(&spare), &body);
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("JupyterHub"), "{}", r.text);
    assert!(!s.output().contains(&good) && !s.output().contains(&spare));
    drop(s);
}
