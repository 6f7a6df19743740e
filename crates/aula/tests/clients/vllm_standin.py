"""A stand-in for a vLLM server with run-time LoRA adapters (a real vLLM is
not installable here): it takes vLLM's command line (`serve MODEL --host
--port --served-model-name --enable-lora --max-lora-rank ...`, the rest
ignored) and answers the endpoints Aula uses with vLLM's request and
response shapes:

- GET /health, GET /v1/models (the base and the adapters loaded, each with
  its `parent`, as vLLM lists them);
- POST /v1/load_lora_adapter {"lora_name", "lora_path"}: only with
  VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora; the path must be
  a PEFT adapter directory (adapter_config.json and its weights) whose rank
  is at most --max-lora-rank; a name loaded twice is a 400 "has already been
  loaded";
- POST /v1/unload_lora_adapter {"lora_name"}: 404 when not loaded;
- POST /v1/chat/completions with `model` the base or a loaded adapter (404
  "does not exist" otherwise), answering which one served it.

With VLLM_API_KEY set, /v1 requires it as a bearer token, as vLLM does.
Loads and unloads are printed (the engine's log)."""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("command")
p.add_argument("model")
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--port", type=int, default=8000)
p.add_argument("--served-model-name", default=None)
p.add_argument("--enable-lora", action="store_true")
p.add_argument("--max-lora-rank", type=int, default=16)
args, _ = p.parse_known_args()
BASE = args.served_model_name or args.model
RUNTIME = os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "").lower() in ("true", "1")
KEY = os.environ.get("VLLM_API_KEY")
adapters = {}
lock = threading.Lock()


def say(msg):
    print(f"standin: {msg}", flush=True)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else (json.dumps(body) if ctype == "application/json" else body).encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, kind="BadRequestError"):
        self.send(status, {"object": "error", "message": message, "type": kind, "param": None, "code": status})

    def authorized(self):
        if KEY and self.headers.get("authorization") != f"Bearer {KEY}":
            self.send(401, {"error": "Unauthorized"})
            return False
        return True

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        try:
            return json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return None

    def do_GET(self):
        if self.path == "/health":
            return self.send(200, b"", "text/plain")
        if not self.authorized():
            return
        if self.path == "/v1/models":
            with lock:
                names = sorted(adapters)
            data = [{"id": BASE, "object": "model", "root": args.model, "parent": None}]
            data += [{"id": n, "object": "model", "root": adapters[n], "parent": BASE} for n in names]
            return self.send(200, {"object": "list", "data": data})
        self.error(404, "Not Found", "NotFoundError")

    def do_POST(self):
        if not self.authorized():
            return
        req = self.body()
        if req is None:
            return self.error(400, "the body is not JSON")
        if self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter") and not (RUNTIME and args.enable_lora):
            # vLLM registers these routes only with run-time updating on.
            return self.error(404, "Not Found", "NotFoundError")
        if self.path == "/v1/load_lora_adapter":
            name, path = req.get("lora_name"), req.get("lora_path")
            if not name or not path:
                return self.error(400, "Both 'lora_name' and 'lora_path' must be provided.")
            with lock:
                if name in adapters:
                    return self.error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
            config = os.path.join(path, "adapter_config.json")
            weights = [f for f in ("adapter_model.safetensors", "adapter_model.bin") if os.path.exists(os.path.join(path, f))]
            if not os.path.isfile(config) or not weights:
                return self.error(400, f"No adapter found for {path}")
            rank = json.load(open(config)).get("r", 0)
            if rank > args.max_lora_rank:
                return self.error(400, f"LoRA rank {rank} is greater than max_lora_rank {args.max_lora_rank}.")
            with lock:
                adapters[name] = path
            say(f"loaded {name} from {path} (rank {rank})")
            return self.send(200, f"Success: LoRA adapter '{name}' added successfully.", "text/plain")
        if self.path == "/v1/unload_lora_adapter":
            name = req.get("lora_name")
            with lock:
                if name not in adapters:
                    return self.error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
                del adapters[name]
            say(f"unloaded {name}")
            return self.send(200, f"Success: LoRA adapter '{name}' removed successfully.", "text/plain")
        if self.path == "/v1/chat/completions":
            model = req.get("model")
            with lock:
                known = model == BASE or model in adapters
            if not known:
                return self.error(404, f"The model `{model}` does not exist.", "NotFoundError")
            text = "served by the base" if model == BASE else f"served by the adapter {model}"
            usage = {"prompt_tokens": len(json.dumps(req.get("messages", []))) // 4 + 1,
                     "completion_tokens": 5, "total_tokens": 0}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            rid, now = f"chatcmpl-{time.time_ns()}", int(time.time())
            if req.get("stream"):
                chunks = [{"id": rid, "object": "chat.completion.chunk", "created": now, "model": model,
                           "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
                          {"id": rid, "object": "chat.completion.chunk", "created": now, "model": model,
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
                if (req.get("stream_options") or {}).get("include_usage"):
                    chunks.append({"id": rid, "object": "chat.completion.chunk", "created": now, "model": model,
                                   "choices": [], "usage": usage})
                data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                return self.send(200, data, "text/event-stream")
            return self.send(200, {"id": rid, "object": "chat.completion", "created": now, "model": model,
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                "finish_reason": "stop"}], "usage": usage})
        self.error(404, "Not Found", "NotFoundError")


say(f"serving {BASE} ({args.model}) on {args.host}:{args.port}; LoRA {'on' if args.enable_lora else 'off'}, "
    f"max rank {args.max_lora_rank}, run-time updates {'on' if RUNTIME else 'off'}")
ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
