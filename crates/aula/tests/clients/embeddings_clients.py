"""Aula's /v1/embeddings through real OpenAI clients.

Run by crates/aula/tests/embeddings_clients.rs:

    python embeddings_clients.py BASE_URL MODEL

BASE_URL is the `aula serve` address (no /v1), MODEL the embedding model's name.
TIKTOKEN_CACHE_DIR must hold cl100k_base under tiktoken's cache name, so that
tiktoken never goes to the network (the Rust test places it there).

Checks:
  * the official `openai` client: its default request (it asks for base64 and
    decodes it) and `encoding_format="float"` give exactly the same floats;
    384 dimensions, unit norm, usage.prompt_tokens > 0;
  * `langchain-openai`'s OpenAIEmbeddings with its default settings (it sends
    cl100k_base token arrays, which the server decodes back to text): the
    vectors match the openai client's for the same texts (cosine >= 0.999).

Prints EMBEDDINGS-CLIENTS-OK at the end; exits non-zero on any mismatch.
"""

import hashlib
import json
import math
import os
import sys

DIMS = 384
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
# tiktoken_ext/openai_public.py: the expected_hash tiktoken checks the file against.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A GPU workstation can serve a whole class.",
    "Embeddings map sentences to vectors.",
]
QUERY = "Which animal jumps over the dog?"


def fail(msg):
    print(f"EMBEDDINGS-CLIENTS-FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


def check_tiktoken_cache():
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    check(cache_dir, "TIKTOKEN_CACHE_DIR is not set: tiktoken would try to download cl100k_base")
    # tiktoken/load.py: cache file name = sha1 hex of the download URL.
    path = os.path.join(cache_dir, hashlib.sha1(CL100K_URL.encode()).hexdigest())
    check(os.path.exists(path), f"{path} (cl100k_base for tiktoken) is missing")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    check(
        digest == CL100K_SHA256,
        f"{path} has sha256 {digest}, tiktoken expects {CL100K_SHA256}: it would re-download it",
    )
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base")
    check(enc.encode("hello world") == [15339, 1917], "cl100k_base does not encode as expected")


class Recorder:
    """httpx request hook: keeps each JSON body sent to /embeddings."""

    def __init__(self):
        self.bodies = []

    def __call__(self, request):
        if request.url.path.endswith("/embeddings"):
            self.bodies.append(json.loads(request.content))

    def take(self):
        out, self.bodies = self.bodies, []
        return out


def main():
    if len(sys.argv) != 3:
        fail("usage: embeddings_clients.py BASE_URL MODEL")
    base, model = sys.argv[1].rstrip("/") + "/v1", sys.argv[2]

    check_tiktoken_cache()

    import httpx
    from openai import OpenAI

    # --- the official openai client ---------------------------------------
    rec = Recorder()
    client = OpenAI(
        base_url=base,
        api_key="none",
        max_retries=0,
        http_client=httpx.Client(event_hooks={"request": [rec]}),
    )
    texts = TEXTS + [QUERY]

    default = client.embeddings.create(model=model, input=texts)
    sent = rec.take()
    check(len(sent) == 1 and sent[0].get("encoding_format") == "base64",
          f"the openai client did not ask for base64 by default: {sent}")
    floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
    sent = rec.take()
    check(len(sent) == 1 and sent[0].get("encoding_format") == "float", f"sent: {sent}")

    ref = {}
    for name, resp in (("default (base64)", default), ("float", floats)):
        check(resp.model == model, f"{name}: model {resp.model!r}, want {model!r}")
        check(len(resp.data) == len(texts), f"{name}: {len(resp.data)} vectors for {len(texts)} inputs")
        check(resp.usage.prompt_tokens > 0, f"{name}: usage {resp.usage}")
        check(resp.usage.total_tokens == resp.usage.prompt_tokens, f"{name}: usage {resp.usage}")
        for i, d in enumerate(resp.data):
            check(d.index == i, f"{name}: data[{i}].index = {d.index}")
            v = d.embedding
            check(isinstance(v, list) and all(isinstance(x, float) for x in v),
                  f"{name}: data[{i}].embedding is not a list of floats: {type(v)}")
            check(len(v) == DIMS, f"{name}: data[{i}] has {len(v)} dims, want {DIMS}")
            check(abs(norm(v) - 1) < 1e-4, f"{name}: data[{i}] has norm {norm(v)}")
    for i, text in enumerate(texts):
        a, b = default.data[i].embedding, floats.data[i].embedding
        if a != b:
            diff = [j for j in range(DIMS) if a[j] != b[j]]
            fail(f"base64 and float vectors differ for {text!r} at {len(diff)} positions, "
                 f"first {diff[0]}: {a[diff[0]]!r} vs {b[diff[0]]!r}")
        ref[text] = b
    check(default.usage.prompt_tokens == floats.usage.prompt_tokens,
          f"usage differs: {default.usage} vs {floats.usage}")
    # Different texts give different vectors (not one constant vector).
    check(cosine(ref[TEXTS[0]], ref[TEXTS[1]]) < 0.95, "different texts give near-identical vectors")
    # One string alone gives the same vector as inside a batch.
    single = client.embeddings.create(model=model, input=QUERY, encoding_format="float")
    rec.take()
    check(len(single.data) == 1, f"one string gave {len(single.data)} vectors")
    check(cosine(single.data[0].embedding, ref[QUERY]) >= 0.9999,
          f"one string alone vs in a batch: cosine {cosine(single.data[0].embedding, ref[QUERY])}")
    print(f"openai client: {len(texts)} vectors, {DIMS} dims, base64 == float, "
          f"prompt_tokens={floats.usage.prompt_tokens}")

    # --- langchain-openai, default settings --------------------------------
    from langchain_openai import OpenAIEmbeddings

    lc_rec = Recorder()
    emb = OpenAIEmbeddings(
        model=model,
        base_url=base,
        api_key="none",
        max_retries=0,
        # Only to see what is sent; every embedding setting stays the default.
        http_client=httpx.Client(event_hooks={"request": [lc_rec]}),
    )
    check(emb.check_embedding_ctx_length and emb.tiktoken_enabled,
          "OpenAIEmbeddings' defaults changed: it no longer sends token arrays")

    docs = emb.embed_documents(TEXTS)
    sent = lc_rec.take()
    check(sent, "langchain sent no request")
    for body in sent:
        inp = body.get("input")
        check(isinstance(inp, list) and inp and all(
            isinstance(t, list) and t and all(isinstance(x, int) for x in t) for t in inp),
            f"langchain did not send token-id arrays: {json.dumps(body)[:300]}")
    check(len(docs) == len(TEXTS), f"embed_documents gave {len(docs)} vectors for {len(TEXTS)} texts")
    query = emb.embed_query(QUERY)
    sent = lc_rec.take()
    check(sent and all(isinstance(b.get("input"), list) and isinstance(b["input"][0], list) for b in sent),
          f"embed_query did not send token-id arrays: {sent}")

    for text, v in list(zip(TEXTS, docs)) + [(QUERY, query)]:
        check(len(v) == DIMS, f"langchain: {len(v)} dims for {text!r}")
        check(abs(norm(v) - 1) < 1e-4, f"langchain: norm {norm(v)} for {text!r}")
        c = cosine(v, ref[text])
        check(c >= 0.999, f"langchain (token ids) vs openai (text) for {text!r}: cosine {c:.6f} < 0.999")
        print(f"langchain vs openai, cosine {c:.6f}: {text!r}")

    print("EMBEDDINGS-CLIENTS-OK")


if __name__ == "__main__":
    main()
