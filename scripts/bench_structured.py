#!/usr/bin/env python3
"""The cost of constrained decoding: the same chat requests free, with
`response_format` json_schema, and with a required tool call, interleaved,
one at a time, against a running engine or gateway (standard library only).

  python3 scripts/bench_structured.py URL MODEL [ROUNDS]

Prints, per mode, completion tokens per second of generation (completion
tokens / (end-to-end time - time of a 1-token request with the same
prompt)) and the mean per-token time, so the grammar's cost per token can
be read off; and checks that every constrained answer parsed.
"""
import json
import sys
import time
import urllib.request

URL, MODEL = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "hobbies", "city"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "make_person", "description": "Record a person",
                                           "parameters": SCHEMA}}]
PROMPT = "Invent a person: name, age, a few hobbies and a city. Answer in JSON."


def post(extra, max_tokens):
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens, "temperature": 0, **extra}
    req = urllib.request.Request(URL + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.monotonic()
    r = json.load(urllib.request.urlopen(req, timeout=300))
    return time.monotonic() - t, r


MODES = {
    "free": {},
    "json_schema": {"response_format": {"type": "json_schema",
                                        "json_schema": {"name": "person", "strict": True, "schema": SCHEMA}}},
    "tool (required)": {"tools": TOOLS, "tool_choice": "required"},
}
stats = {m: [0.0, 0] for m in MODES}
bad = 0
for _ in range(ROUNDS):
    for mode, extra in MODES.items():
        base, _ = post(extra, 1)  # the prompt alone (and the grammar's set-up)
        took, r = post(extra, 160)
        ch = r["choices"][0]
        n = r["usage"]["completion_tokens"]
        if mode != "free" and ch["finish_reason"] != "length":
            try:
                if mode == "json_schema":
                    json.loads(ch["message"]["content"])
                else:
                    json.loads(ch["message"]["tool_calls"][0]["function"]["arguments"])
            except Exception:
                bad += 1
        stats[mode][0] += max(took - base, 1e-9)
        stats[mode][1] += max(n - 1, 0)
for mode, (secs, toks) in stats.items():
    print(f"{mode:<16} {toks / secs:>7.1f} tok/s  {1000 * secs / max(toks, 1):>6.2f} ms/token  ({toks} tokens)")
print(f"constrained answers that did not parse: {bad}")
