//! The Files API end to end: the official `openai` client, ownership, the
//! size and storage limits, bad uploads, and what a crash leaves behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use serde_json::Value;

/// A gateway with students `ada` and `bob` (keys returned) under `limits`.
fn gateway(tag: &str, limits: &str) -> (TestGateway, Proc, String, String) {
    let mock = spawn_mock(0);
    let g = TestGateway::new(tag)
        .url_model("mock", &mock.url)
        .config(limits);
    let key = |user: &str| add_user(&g.home, user, &[]);
    let (ada, bob) = (key("ada"), key("bob"));
    let s = g.start();
    drop(mock); // no model is needed for files
    (g, s, ada, bob)
}

/// Names in the file store, but for temporary uploads.
fn stored(g: &TestGateway) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(g.home.join("files"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_openai_client_uploads_lists_downloads_and_deletes() {
    let python = python_with("openai");
    let (_g, s, ada, bob) = gateway("files-client", "");
    let script = r##"
import sys, openai
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
data = "# Week 1\nGradient descent, step by step.\n".encode() * 1000
f = c.files.create(file=("week1.md", data), purpose="assistants")
assert f.object == "file" and f.bytes == len(data) and f.filename == "week1.md", f
assert f.purpose == "assistants" and f.status == "processed", f
more = [c.files.create(file=(f"n{i}.txt", b"x" * (i + 1)), purpose="user_data").id for i in range(3)]
# Auto-pagination over pages of 2 (the client follows `after`).
ids = [x.id for x in c.files.list(limit=2)]
assert sorted(ids) == sorted([f.id] + more), ids
assert ids[0] == more[-1], "newest first"
assert [x.id for x in c.files.list(purpose="assistants")] == [f.id]
assert [x.id for x in c.files.list(order="asc", limit=100)][0] == f.id
assert c.files.retrieve(f.id).bytes == len(data)
assert c.files.content(f.id).read() == data
assert c.files.delete(f.id).deleted
try:
    c.files.retrieve(f.id)
    raise SystemExit("a deleted file is still there")
except openai.NotFoundError:
    pass
other = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[3], max_retries=0)
try:
    other.files.content(more[0])
    raise SystemExit("bob read ada's file")
except openai.NotFoundError:
    pass
assert list(other.files.list()) == []
try:
    c.files.create(file=("t.jsonl", b"{}"), purpose="fine-tune")
    raise SystemExit("a bad fine-tune file accepted")
except openai.BadRequestError as e:
    assert "not a fine-tuning file: line 1:" in str(e), e
print("ok")
"##;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &s.url, &ada, &bob])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Upload `size` bytes in small, paced writes (as a client on a slow link
/// would): whether every write went through, and the raw answer.
fn slow_upload(url: &str, key: &str, size: usize) -> (bool, String) {
    use std::io::{Read, Write};
    let b = "slowBoundary";
    let head = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
    );
    let tail = format!("\r\n--{b}--\r\n");
    let len = head.len() + size + tail.len();
    let mut tcp = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    let mut ok = tcp
        .write_all(
            format!(
                "POST /v1/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: multipart/form-data; boundary={b}\r\nContent-Length: {len}\r\n\r\n{head}"
            )
            .as_bytes(),
        )
        .is_ok();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while ok && sent < size {
        let n = chunk.len().min(size - sent);
        ok = tcp.write_all(&chunk[..n]).is_ok();
        sent += n;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    ok = ok && tcp.write_all(tail.as_bytes()).is_ok();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    (ok, answer)
}

#[test]
fn limits_and_bad_uploads_are_refused_leaving_nothing_behind() {
    let (g, s, ada, bob) = gateway(
        "files-limits",
        "[[limits]]\nrole = \"student\"\nmax_file_mb = 1\nfile_storage_mb = 2\n",
    );
    let kb = |n: usize| vec![b'a'; n * 1000];
    // Over the size of one file: 413, naming the limit — also to a client
    // still sending far more, slowly: the gateway reads the rest so that it
    // sees the answer, not a connection closed on it.
    let (status, v) = upload_raw(&s.url, Some(&ada), "big.bin", &kb(1500), "user_data");
    assert_eq!(status, 413, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("1 MB"),
        "{v}"
    );
    let (wrote_all, answer) = slow_upload(&s.url, &ada, 8_000_000);
    assert!(
        wrote_all,
        "the gateway closed the connection on a client still sending"
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.300}");
    // Two files of 0.9 MB fit in 2 MB; a third does not: 429, naming it.
    upload(&s.url, &ada, "a.bin", &kb(900), "user_data");
    upload(&s.url, &ada, "b.bin", &kb(900), "user_data");
    let (status, v) = upload_raw(&s.url, Some(&ada), "c.bin", &kb(900), "user_data");
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "storage_quota", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("2 MB"),
        "{v}"
    );
    // bob's quota is his own.
    upload(&s.url, &bob, "b.bin", &kb(900), "user_data");
    // An empty file, a missing purpose, an unknown purpose, not multipart.
    let (status, v) = upload_raw(&s.url, Some(&bob), "empty.txt", b"", "user_data");
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("file")),
        "{v}"
    );
    let (status, v) = upload_raw(&s.url, Some(&bob), "x.txt", b"x", "homework");
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("purpose")),
        "{v}"
    );
    let r = post_auth(
        &format!("{}/v1/files", s.url),
        Some(&bob),
        &serde_json::json!({"file": "x", "purpose": "user_data"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("multipart/form-data"), "{}", r.text);
    let (status, _) = upload_raw(&s.url, None, "x.txt", b"x", "user_data");
    assert_eq!(status, 401);
    // Only the three accepted uploads are stored; no temporary file is left.
    let files = stored(&g);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().all(|f| f.starts_with("file-")), "{files:?}");
    // Deleting frees the quota.
    let list = get_auth(&format!("{}/v1/files", s.url), Some(&ada));
    let first = list.body["data"][0]["id"].as_str().unwrap().to_string();
    let gone = ureq::delete(&format!("{}/v1/files/{first}", s.url))
        .set("Authorization", &format!("Bearer {ada}"))
        .call()
        .unwrap();
    assert_eq!(gone.status(), 200);
    upload(&s.url, &ada, "c.bin", &kb(900), "user_data");
    assert_eq!(stored(&g).len(), 3);
    let _: Value = list.body;
}

#[test]
fn what_a_crash_leaves_in_the_file_store_is_removed_at_start() {
    // No engine is needed for files: a model nobody serves will do.
    let g = TestGateway::new("files-sweep").url_model("absent", "http://127.0.0.1:9");
    let dir = g.home.join("files");
    std::fs::create_dir_all(&dir).unwrap();
    // A temporary upload, and bytes whose record was never written, both
    // two hours old; and an upload under way now (another gateway sharing
    // the directory may be receiving it): kept.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for (name, bytes) in [
        (".upload-file-x", &b"half"[..]),
        ("file-orphan000000000000000000", b"no record"),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    std::fs::write(dir.join(".upload-file-now"), b"arriving").unwrap();
    let s = g.start();
    let id = upload(&s.url, "none", "kept.txt", b"kept", "assistants");
    drop(s);
    assert!(dir.join(".upload-file-now").exists());
    std::fs::remove_file(dir.join(".upload-file-now")).unwrap();
    assert_eq!(stored(&g), vec![id.clone()]);
    // A restart keeps what has a record.
    let s = g.start();
    let r = get(&format!("{}/v1/files/{id}/content", s.url));
    assert_eq!((r.status, r.text.as_str()), (200, "kept"));
}

/// Uploads of one user at the same time cannot together pass the quota.
#[test]
fn concurrent_uploads_stay_within_the_quota() {
    let (g, s, ada, _bob) = gateway(
        "files-race",
        "[[limits]]\nrole = \"student\"\nfile_storage_mb = 3\n",
    );
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (url, key) = (s.url.clone(), ada.clone());
            std::thread::spawn(move || {
                upload_raw(
                    &url,
                    Some(&key),
                    &format!("f{i}.bin"),
                    &vec![b'x'; 900_000],
                    "user_data",
                )
                .0
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // 3 MB holds three files of 0.9 MB, never four.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(stored(&g).len(), 3);
}
