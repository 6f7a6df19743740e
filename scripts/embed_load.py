#!/usr/bin/env python3
"""Embedding load for scripts/bench-embeddings.sh (standard library only).

  embed_load.py URL CLIENTS SENTENCES_PER_REQUEST SECONDS LABEL
      CLIENTS threads each send requests back to back for SECONDS to
      URL/v1/embeddings; prints inputs/s, tokens/s (from `usage`) and
      request latency p50.
  embed_load.py --sentence-transformers SECONDS THREADS
      sentence-transformers' model.encode on the same sentences, batch 32.

The sentences are the reference set of the tests (crates/aula/tests/data/
minilm_refs.json), those of at most 256 word pieces, cycled.
"""
import json
import os
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REFS = os.path.join(HERE, "..", "crates", "aula", "tests", "data", "minilm_refs.json")
SENTENCES = [c["text"] for c in json.load(open(REFS))["cases"] if c["n_tokens"] <= 256]


def http_load(url, clients, per_request, seconds, label):
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    totals = {"inputs": 0, "tokens": 0, "errors": 0}
    latencies = []

    def client(k):
        i = k * 7
        while time.monotonic() < stop:
            batch = [SENTENCES[(i + j) % len(SENTENCES)] for j in range(per_request)]
            i += per_request
            body = json.dumps({"model": "all-minilm-l6-v2", "input": batch}).encode()
            req = urllib.request.Request(url + "/v1/embeddings", data=body,
                                         headers={"Content-Type": "application/json"})
            t = time.monotonic()
            try:
                r = json.load(urllib.request.urlopen(req, timeout=120))
                ok = len(r["data"]) == per_request
            except Exception:
                ok = False
            with lock:
                if ok:
                    totals["inputs"] += per_request
                    totals["tokens"] += r["usage"]["prompt_tokens"]
                    latencies.append(time.monotonic() - t)
                else:
                    totals["errors"] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
    print(f"{label:<14} clients {clients:>2}  sentences/request {per_request:>2}  "
          f"{totals['inputs'] / took:>8.1f} inputs/s  {totals['tokens'] / took:>9.0f} tokens/s  "
          f"p50 {p50:>7.1f} ms  errors {totals['errors']}", flush=True)


def st_load(seconds, threads):
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(int(threads))
    src = os.environ.get("ST_MODEL_DIR")
    model = SentenceTransformer(src, device="cpu", local_files_only=True)
    stop = time.monotonic() + seconds
    n = 0
    t0 = time.monotonic()
    i = 0
    while time.monotonic() < stop:
        batch = [SENTENCES[(i + j) % len(SENTENCES)] for j in range(32)]
        i += 32
        model.encode(batch, batch_size=32)
        n += 32
    took = time.monotonic() - t0
    print(f"{'sentence-transformers':<14} batch 32, torch threads {threads}: {n / took:>8.1f} inputs/s", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--sentence-transformers":
        st_load(float(sys.argv[2]), sys.argv[3])
    else:
        http_load(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
