#!/usr/bin/env python3
"""The cost of constrained decoding: the same chat requests free, with
`response_format` json_schema, and with a required tool call, interleaved,
against a running engine or gateway (standard library only).

  python3 scripts/bench_structured.py URL MODEL [ROUNDS] [STREAMS]

Per mode, STREAMS identical requests run at once (default 1); the rate is
completion tokens per second of generation (completion tokens / (wall time
- wall time of the same requests cut to 1 token)), so the prompt and the
grammar's set-up are left out, and the mean time per token of one stream.
Every constrained answer must parse. Then the set-up cost: a large schema
(60 properties) sent for the first time and again (1-token requests), beside
a free 1-token request.
"""
import json
import sys
import threading
import time
import urllib.request

URL, MODEL = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
STREAMS = int(sys.argv[4]) if len(sys.argv) > 4 else 1
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


def post(extra, max_tokens, prompt=PROMPT):
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, **extra}
    req = urllib.request.Request(URL + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.monotonic()
    r = json.load(urllib.request.urlopen(req, timeout=600))
    return time.monotonic() - t, r


def together(extra, max_tokens):
    """STREAMS requests at once: wall time and the answers."""
    out = [None] * STREAMS

    def one(i):
        out[i] = post(extra, max_tokens)[1]

    t = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(STREAMS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.monotonic() - t, out


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
        base, _ = together(extra, 1)
        took, answers = together(extra, 160)
        for r in answers:
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
            stats[mode][1] += max(n - 1, 0)
        stats[mode][0] += max(took - base, 1e-9)
print(f"{STREAMS} stream(s), {ROUNDS} rounds")
for mode, (secs, toks) in stats.items():
    print(f"{mode:<16} {toks / secs:>7.1f} tok/s  {1000 * secs * STREAMS / max(toks, 1):>6.2f} ms/token/stream  ({toks} tokens)")
print(f"constrained answers that did not parse: {bad}")

# Set-up: a schema of 60 properties, first time and again.
big = {"type": "object", "additionalProperties": False,
       "properties": {f"field_{i}": ({"type": "string", "maxLength": 40} if i % 3 == 0 else
                                     {"type": "integer", "minimum": 0} if i % 3 == 1 else
                                     {"type": "array", "items": {"enum": ["a", "b", "c"]}})
                      for i in range(60)}}
big["required"] = list(big["properties"])
rf = {"response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": big}}}
free, _ = post({}, 1, "Hi")
first, _ = post(rf, 1, "Hi")
again, _ = post(rf, 1, "Hi")
print(f"set-up, 1-token requests: free {1000 * free:.0f} ms, large schema first {1000 * first:.0f} ms, "
      f"again {1000 * again:.0f} ms")
