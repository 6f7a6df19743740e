//! `aula serve` end to end: real engine children, routing, restarts, shutdown,
//! configuration, and the official `openai` Python client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

/// A data directory whose model folder holds both built-in models.
fn home_with_both_models(tag: &str) -> TempHome {
    let home = temp_home(tag);
    for f in [SMOL_FILE, GEMMA_FILE] {
        std::os::unix::fs::symlink(model_path(f), home.join("models").join(f)).unwrap();
    }
    home
}

fn wait_ready(url: &str) {
    wait_for("every model to be ready", Duration::from_secs(120), || {
        get(&format!("{url}/readyz")).status == 200
    });
}

#[test]
fn serves_both_models_routes_restarts_and_leaves_no_child() {
    let home = home_with_both_models("serve");
    let cfg = home.join("aula.toml");
    // Small contexts keep the test light; every other setting is the default.
    std::fs::write(
        &cfg,
        format!(
            "[[models]]\nname = \"{SMOL}\"\ngguf = \"{SMOL_FILE}\"\ncontext = 512\nparallel = 2\n\n\
             [[models]]\nname = \"{GEMMA}\"\ngguf = \"{GEMMA_FILE}\"\ncontext = 512\nparallel = 2\n"
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    wait_for(
        "the banner with a curl and an openai example",
        Duration::from_secs(60),
        || {
            let out = s.output();
            out.contains("curl ") && out.contains("from openai import OpenAI")
        },
    );
    wait_ready(&s.url);
    let models = get(&format!("{}/v1/models", s.url)).body;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![SMOL, GEMMA]);
    assert_eq!(get(&format!("{}/healthz", s.url)).status, 200);

    let chat = format!("{}/v1/chat/completions", s.url);
    // Both architectures, both template paths, through the gateway; same as direct.
    for (model, prompt) in [(SMOL, "Name a fruit."), (GEMMA, "Name a fruit.")] {
        // Warmed first: both answers compared below then reuse the cached
        // prompt and decode alike (a whole-prompt batch may round apart).
        assert_eq!(post(&chat, &chat_body(model, prompt, 8)).status, 200);
        let a = post(&chat, &chat_body(model, prompt, 8));
        assert_eq!(a.status, 200, "{model}: {}", a.text);
        assert_eq!(a.body["model"], model);
        let mut body = chat_body(model, prompt, 8);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let st = stream(&chat, &body);
        assert!(st.done);
        assert_eq!(
            st.text,
            a.body["choices"][0]["message"]["content"].as_str().unwrap()
        );
        assert_eq!(st.events.last().unwrap()["usage"], a.body["usage"]);
    }
    let c = post(
        &format!("{}/v1/completions", s.url),
        &json!({"model": GEMMA, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(c.status, 200, "{}", c.text);
    assert!(
        c.body["usage"]["completion_tokens"].as_u64().unwrap() <= 4,
        "{}",
        c.text
    );

    // Unknown model: 404 listing the models; malformed JSON: 400; engine errors pass through.
    let r = post(&chat, &chat_body("nope", "hi", 4));
    assert_eq!(r.status, 404);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(SMOL) && msg.contains(GEMMA), "{msg}");
    let r = post_raw(&chat, "{\"model\": ");
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
    let r = post(&chat, &json!({"model": SMOL, "messages": []}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(get(&format!("{}/v2/nothing", s.url)).status, 404);

    // Engines answer only the gateway: a direct request without the key
    // the gateway gave each engine is refused.
    let kids = children_of(s.pid());
    for k in &kids {
        let ports = listening_ports(*k);
        assert_eq!(ports.len(), 1, "engine {k} listens on one port: {ports:?}");
        let direct = get(&format!("http://127.0.0.1:{}/health", ports[0]));
        assert_eq!(direct.status, 401, "{}", direct.text);
        let direct = post(
            &format!("http://127.0.0.1:{}/v1/chat/completions", ports[0]),
            &chat_body(SMOL, "hi", 2),
        );
        assert_eq!(direct.status, 401, "{}", direct.text);
    }

    // SIGKILL one engine: the gateway restarts it and serves again.
    let kids = children_of(s.pid());
    assert_eq!(kids.len(), 2, "one engine child per model: {kids:?}");
    let victim = kids[0];
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    wait_for(
        "the killed engine to be replaced",
        Duration::from_secs(60),
        || {
            let now = children_of(s.pid());
            now.len() == 2 && !now.contains(&victim)
        },
    );
    wait_ready(&s.url);
    for model in [SMOL, GEMMA] {
        assert_eq!(post(&chat, &chat_body(model, "hi", 2)).status, 200);
    }

    // Stopping the gateway stops every engine.
    let kids = children_of(s.pid());
    drop(s);
    wait_for(
        "engines to exit with the gateway",
        Duration::from_secs(15),
        || kids.iter().all(|k| !alive(*k)),
    );
}

#[test]
fn sigkilled_gateway_leaves_no_orphans_and_defaults_discover_models() {
    let home = home_with_both_models("orphans");
    // No config: every GGUF in the model directory is served.
    let mut s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    wait_for("both engines to start", Duration::from_secs(60), || {
        children_of(s.pid()).len() == 2
    });
    let kids = children_of(s.pid());
    let ids: Vec<String> = get(&format!("{}/v1/models", s.url)).body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![GEMMA.to_string(), SMOL.to_string()]);
    s.child.kill().unwrap();
    let _ = s.child.wait();
    wait_for(
        "engines to die with a SIGKILLed gateway",
        Duration::from_secs(60),
        || kids.iter().all(|k| !alive(*k)),
    );
}

#[test]
fn url_models_are_proxied() {
    let engine = spawn_engine(
        SMOL_FILE,
        &[
            "--parallel",
            "2",
            "--context",
            "256",
            "--name",
            "remote-smol",
        ],
    );
    let home = temp_home("url");
    let cfg = home.join("aula.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[models]]\nname = \"remote-smol\"\nurl = \"{}/v1\"\n",
            engine.url
        ),
    )
    .unwrap();
    let s = spawn_aula(
        &["serve", "--port", "0", "--config", cfg.to_str().unwrap()],
        Some(&home),
    );
    wait_ready(&s.url);
    let r = post(
        &format!("{}/v1/chat/completions", s.url),
        &chat_body("remote-smol", "hi", 3),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body["usage"]["completion_tokens"].as_u64().unwrap() <= 3,
        "{}",
        r.text
    );
    assert!(
        children_of(s.pid()).is_empty(),
        "url models start no engine"
    );
    // The remote engine goes away: a clean 503, and the gateway keeps running.
    drop(engine);
    let r = post(
        &format!("{}/v1/chat/completions", s.url),
        &chat_body("remote-smol", "hi", 3),
    );
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("remote-smol")
    );
    assert_eq!(get(&format!("{}/healthz", s.url)).status, 200);
}

#[test]
fn bad_config_stops_start_up_naming_key_and_line() {
    let home = temp_home("badcfg");
    let cfg = home.join("aula.toml");
    std::fs::write(&cfg, "[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\n\n[[models]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\n").unwrap();
    let out = std::process::Command::new(aula_exe())
        .args(["serve", "--port", "0", "--config", cfg.to_str().unwrap()])
        .env("AULA_HOME", &home)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 6") && err.contains("`name`") && err.contains("unique"),
        "{err}"
    );
    std::fs::write(&cfg, "[server]\nprot = 8080\n").unwrap();
    let out = std::process::Command::new(aula_exe())
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("AULA_HOME", &home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 2") && err.contains("prot"),
        "{err}"
    );
}

#[test]
fn official_openai_python_client() {
    let python = python_with("openai");
    let home = temp_home("openai");
    std::os::unix::fs::symlink(model_path(SMOL_FILE), home.join("models").join(SMOL_FILE)).unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    wait_ready(&s.url);
    let script = r#"
import sys, openai
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1] + "/v1", api_key="none", max_retries=0)
m = sys.argv[2]
r = c.chat.completions.create(model=m, messages=[{"role": "user", "content": "Say hi."}], max_tokens=6, temperature=0)
assert r.choices[0].message.role == "assistant"
text = r.choices[0].message.content
assert r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 0, r.usage
parts = []
usage = None
for chunk in c.chat.completions.create(model=m, messages=[{"role": "user", "content": "Say hi."}], max_tokens=6,
                                       temperature=0, stream=True, stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
# Not compared with the first answer's text: a second generation of the same
# prompt may reuse the cached prefix, batch differently and so differ in the
# last float bits; the stream's own usage and shape are what is checked.
assert usage is not None and 0 < usage.completion_tokens <= 6, usage
assert usage.prompt_tokens == r.usage.prompt_tokens, (usage, r.usage)
assert len("".join(parts)) > 0 or usage.completion_tokens == 1, parts
t = c.completions.create(model=m, prompt="One, two,", max_tokens=3, temperature=0)
assert t.usage.completion_tokens <= 3 and t.usage.prompt_tokens > 0, t.usage
try:
    c.chat.completions.create(model=m, messages=[], max_tokens=3)
    raise SystemExit("expected BadRequestError")
except openai.BadRequestError as e:
    assert "at least one message" in str(e), e
try:
    c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected NotFoundError")
except openai.NotFoundError as e:
    assert m in str(e), e
# Structured outputs: the client's parse() with a Pydantic model sends a strict
# json_schema; the answer always parses into the model. Every field is
# bounded, so whatever greedy text this CPU's kernels give, the object closes
# well within max_tokens (parse() raises on a "length" finish).
from pydantic import BaseModel, Field
class City(BaseModel):
    name: str = Field(max_length=32)
    country: str = Field(max_length=32)
    population: int = Field(ge=0, le=100_000_000)
for q in ["Tell me about Paris.", "Name a big city in Japan.", "Describe a city."]:
    p = c.chat.completions.parse(model=m, messages=[{"role": "user", "content": q}], max_tokens=200,
                                 temperature=0, response_format=City)
    ch = p.choices[0]
    assert ch.finish_reason == "stop", (q, ch)
    assert isinstance(ch.message.parsed, City), ch.message
# Function calling with the client's own types, and LangChain's bind_tools.
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                         "required": ["city"]}}}]
r = c.chat.completions.create(model=m, messages=[{"role": "user", "content": "Weather in Oslo?"}],
                              tools=tools, tool_choice="required", max_tokens=80, temperature=0)
call = r.choices[0].message.tool_calls[0]
assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", r
import json
assert isinstance(json.loads(call.function.arguments)["city"], str)
from langchain_openai import ChatOpenAI
from langchain_core.tools import tool
class WeatherArgs(BaseModel):
    city: str = Field(max_length=40)
@tool(args_schema=WeatherArgs)
def get_weather(city: str) -> str:
    """Weather in a city."""
    return "sunny"
llm = ChatOpenAI(model=m, base_url=sys.argv[1] + "/v1", api_key="none", max_retries=0, temperature=0, max_tokens=80)
msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather", msg
assert isinstance(msg.tool_calls[0]["args"].get("city"), str), msg.tool_calls
print("OPENAI-CLIENT-OK")
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &s.url, SMOL])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("OPENAI-CLIENT-OK"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 16's client tests through `aula serve`: `parse()` 50 times out of
/// 50, a nested schema validated by `jsonschema` every time (streamed or
/// not), tool round trips with `required` and a named tool (streamed
/// deltas assembled as the client does), LangChain's `bind_tools`
/// (`clients/structured_client.py`).
#[test]
fn structured_outputs_and_tools_with_real_clients() {
    let python = python_with("openai, jsonschema, langchain_openai, pydantic");
    let home = temp_home("structured");
    std::os::unix::fs::symlink(model_path(SMOL_FILE), home.join("models").join(SMOL_FILE)).unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    wait_ready(&s.url);
    let script = format!(
        "{}/tests/clients/structured_client.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new(&python)
        .args([script.as_str(), &s.url, SMOL])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("STRUCTURED-OK"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_model_that_cannot_load_gets_a_clear_503_and_the_others_keep_serving() {
    let home = temp_home("broken");
    std::os::unix::fs::symlink(model_path(SMOL_FILE), home.join("models").join(SMOL_FILE)).unwrap();
    std::fs::write(
        home.join("models").join("broken.gguf"),
        b"definitely not a model",
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let chat = format!("{}/v1/chat/completions", s.url);
    wait_for(
        "the broken model's start to fail",
        Duration::from_secs(60),
        || {
            let r = post(&chat, &chat_body("broken", "hi", 2));
            r.status == 503
                && r.body["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not a GGUF")
        },
    );
    let r = post(&chat, &chat_body("broken", "hi", 2));
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`broken`")
            && msg.contains("could not be loaded")
            && msg.contains("not a GGUF"),
        "{msg}"
    );
    wait_for("the good model", Duration::from_secs(60), || {
        post(&chat, &chat_body(SMOL, "hi", 2)).status == 200
    });
}

/// An engine that is alive but no longer answers (here: stopped with
/// SIGSTOP) fails its health checks and is replaced; the model serves again.
#[test]
fn a_wedged_engine_is_restarted() {
    let home = temp_home("wedged");
    std::os::unix::fs::symlink(model_path(SMOL_FILE), home.join("models").join(SMOL_FILE)).unwrap();
    let s = spawn_aula_env(
        &["serve", "--port", "0"],
        Some(&home),
        // 3 s probes: short for the test, long enough that a busy machine
        // does not also restart the replacement while it starts.
        &[("AULA_ENGINE_LIVENESS_S", "3")],
    );
    wait_ready(&s.url);
    let kids = children_of(s.pid());
    assert_eq!(kids.len(), 1, "{kids:?}");
    let victim = kids[0];
    unsafe {
        libc::kill(victim as i32, libc::SIGSTOP);
    }
    wait_for(
        "the wedged engine to be replaced",
        Duration::from_secs(60),
        || {
            let now = children_of(s.pid());
            now.len() == 1 && !now.contains(&victim)
        },
    );
    assert!(
        s.output().contains("stopped answering its health check"),
        "{}",
        s.output()
    );
    wait_ready(&s.url);
    let chat = format!("{}/v1/chat/completions", s.url);
    assert_eq!(post(&chat, &chat_body(SMOL, "hi", 2)).status, 200);
    drop(s);
}

/// SIGTERM while a request is being answered: the gateway stops accepting,
/// the request finishes with its whole answer, its ledger row is final
/// (not `unfinished`), and the gateway exits cleanly.
#[test]
fn a_request_in_flight_at_sigterm_completes_and_is_recorded() {
    // Four tokens, 2 s apart: the answer takes about 8 s, time enough for
    // the checks below on a busy machine.
    let mock = spawn_mock(2000);
    let g = TestGateway::new("sigterm").url_model("mock", &mock.url);
    let home = &g.home;
    let mut s = g.start();
    wait_ready(&s.url);
    let url = s.url.clone();
    let request = std::thread::spawn(move || {
        let r = post(
            &format!("{url}/v1/chat/completions"),
            &chat_body("mock", "hi", 4),
        );
        (r, std::time::Instant::now())
    });
    wait_for(
        "the request to be in flight",
        Duration::from_secs(60),
        || get(&format!("{}/stats", mock.url)).body["in_flight"] == 1,
    );
    let signalled = std::time::Instant::now();
    unsafe {
        libc::kill(s.pid() as i32, libc::SIGTERM);
    }
    // New connections are refused once shutdown has begun.
    wait_for("the listener to close", Duration::from_secs(30), || {
        std::net::TcpStream::connect(s.url.trim_start_matches("http://")).is_err()
    });
    let (r, answered) = request.join().unwrap();
    assert!(
        answered > signalled,
        "the answer came before SIGTERM: nothing was in flight"
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["usage"]["completion_tokens"], 4, "{}", r.text);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", s.output());
    let (ok, out, err) = run_aula(&["usage", "--json", "--by", "model"], home);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &rows[0];
    assert_eq!(row["key"], "mock", "{out}");
    assert_eq!(row["requests"], 1, "{out}");
    assert_eq!(row["ok"], 1, "{out}");
    assert_eq!(row["unfinished"], 0, "{out}");
    assert_eq!(row["completion_tokens"], 4, "{out}");
}
