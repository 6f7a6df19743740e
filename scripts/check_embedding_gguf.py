#!/usr/bin/env python3
"""Check an embedding GGUF (from embedding_to_gguf.py) without llama.cpp.

  check_embedding_gguf.py MODEL.gguf [REFS.json]

1. Structure: every key that the llama.cpp vendored by llama-cpp-sys-2 0.1.161
   reads for LLM_ARCH_BERT (llama-model.cpp load_hparams, models/bert.cpp,
   llama-vocab.cpp) is present with the right type, and the file holds exactly
   the tensors models/bert.cpp creates (the loader rejects a file with tensors
   it did not ask for) with the shapes it asks for (ggml ne order).
2. Vocabulary: tokens are unique (llama-vocab.cpp asserts it), and the special
   ids name [CLS]/[SEP]/[UNK]/[PAD]/[MASK] as control tokens.
3. With REFS.json (crates/aula/tests/data/minilm_refs.json): each text is
   tokenised by a Python port of llama.cpp's WordPiece tokenizer
   (llm_tokenizer_wpm_session) over the GGUF vocabulary and compared with the
   reference ids (from the Hugging Face tokenizer); then a numpy BERT forward
   pass using the GGUF's own tensors (F16 as stored) + mean pooling + L2 norm is
   compared with the reference vectors (cosine). This checks tensor names,
   orientation and the vocabulary rewrite end to end; it does not run ggml.

Needs numpy and gguf only. Exits non-zero on a structural failure or when a
forward-pass cosine falls below 0.999.
"""
from __future__ import annotations

import json
import math
import sys
import unicodedata

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGMLQuantizationType, TokenType

FAIL: list[str] = []


def check(cond: bool, what: str) -> None:
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAIL.append(what)


def field_value(r: GGUFReader, key: str):
    f = r.get_field(key)
    if f is None:
        return None, None
    t = f.types[0]
    if t == GGUFValueType.STRING:
        return t, bytes(f.parts[f.data[0]]).decode("utf-8")
    if t == GGUFValueType.ARRAY:
        sub = f.types[1]
        if sub == GGUFValueType.STRING:
            return (t, sub), [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return (t, sub), [f.parts[i][0].item() for i in f.data]
    return t, f.parts[f.data[0]][0].item()


def structure(r: GGUFReader) -> dict:
    U32, F32, BOOL, STR = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.BOOL, GGUFValueType.STRING
    t, arch = field_value(r, "general.architecture")
    check(arch == "bert", f"general.architecture = {arch!r}")
    hp = {}
    for key, typ, required in [
        ("bert.context_length", U32, True),
        ("bert.embedding_length", U32, True),
        ("bert.block_count", U32, True),
        ("bert.feed_forward_length", U32, True),
        ("bert.attention.head_count", U32, True),
        ("bert.attention.layer_norm_epsilon", F32, True),
        ("bert.attention.causal", BOOL, True),
        ("bert.pooling_type", U32, True),
        ("tokenizer.ggml.model", STR, True),
        ("tokenizer.ggml.token_type_count", U32, True),
        ("tokenizer.ggml.bos_token_id", U32, True),
        ("tokenizer.ggml.seperator_token_id", U32, True),
        ("tokenizer.ggml.unknown_token_id", U32, True),
        ("tokenizer.ggml.padding_token_id", U32, True),
        ("tokenizer.ggml.mask_token_id", U32, False),
        ("tokenizer.ggml.normalizer.lowercase", BOOL, False),
        ("tokenizer.ggml.normalizer.strip_accents", BOOL, False),
        ("aula.embedding.normalize", BOOL, False),
        ("aula.embedding.max_seq_length", U32, False),
        ("general.name", STR, False),
    ]:
        t, v = field_value(r, key)
        check((t == typ) if (required or t is not None) else True, f"{key} = {v!r} ({t.name if t is not None else 'absent'})")
        hp[key] = v
    check(hp["bert.attention.causal"] is False, "attention is not causal")
    check(hp["bert.pooling_type"] == 1, "pooling_type is MEAN (1)")
    check(hp["tokenizer.ggml.model"] == "bert", "tokenizer model is bert (WPM)")
    check((hp["tokenizer.ggml.token_type_count"] or 0) > 0, "token_type_count > 0 (models/bert.cpp throws otherwise)")

    _, tokens = field_value(r, "tokenizer.ggml.tokens")
    _, ttypes = field_value(r, "tokenizer.ggml.token_type")
    check(tokens is not None and ttypes is not None and len(tokens) == len(ttypes), "tokens and token_type arrays of equal length")
    check(len(set(tokens)) == len(tokens), f"{len(tokens)} tokens, all distinct")
    for key, text in [("tokenizer.ggml.bos_token_id", "[CLS]"), ("tokenizer.ggml.seperator_token_id", "[SEP]"),
                      ("tokenizer.ggml.unknown_token_id", "[UNK]"), ("tokenizer.ggml.padding_token_id", "[PAD]"),
                      ("tokenizer.ggml.mask_token_id", "[MASK]")]:
        i = hp.get(key)
        if i is None:
            continue
        check(tokens[i] == text and ttypes[i] == TokenType.CONTROL, f"{key} -> {tokens[i]!r} (control)")

    n_embd = hp["bert.embedding_length"]
    n_ff = hp["bert.feed_forward_length"]
    n_ctx = hp["bert.context_length"]
    n_layer = hp["bert.block_count"]
    n_vocab = len(tokens)
    n_types = hp["tokenizer.ggml.token_type_count"]
    check(n_embd % hp["bert.attention.head_count"] == 0, "embedding_length divisible by head_count")

    # tensors models/bert.cpp creates: name -> (ne, required)
    want: dict[str, tuple[tuple[int, ...], bool]] = {
        "token_embd.weight": ((n_embd, n_vocab), True),
        "token_types.weight": ((n_embd, n_types), False),
        "position_embd.weight": ((n_embd, n_ctx), True),
        "token_embd_norm.weight": ((n_embd,), True),
        "token_embd_norm.bias": ((n_embd,), True),
    }
    for i in range(n_layer):
        b = f"blk.{i}."
        for p in ("attn_q", "attn_k", "attn_v", "attn_output"):
            want[b + p + ".weight"] = ((n_embd, n_embd), True)
            want[b + p + ".bias"] = ((n_embd,), False)
        for p in ("attn_output_norm", "layer_output_norm"):
            want[b + p + ".weight"] = ((n_embd,), True)
            want[b + p + ".bias"] = ((n_embd,), True)
        want[b + "ffn_up.weight"] = ((n_embd, n_ff), True)
        want[b + "ffn_up.bias"] = ((n_ff,), False)
        want[b + "ffn_down.weight"] = ((n_ff, n_embd), True)
        want[b + "ffn_down.bias"] = ((n_embd,), False)
    have = {t.name: t for t in r.tensors}
    extra = sorted(set(have) - set(want))
    missing = sorted(n for n, (_, req) in want.items() if req and n not in have)
    check(not extra, f"no tensors llama.cpp would not load (extra: {extra[:5]})")
    check(not missing, f"all required tensors present (missing: {missing[:5]})")
    bad_shape = [n for n, t in have.items() if n in want and tuple(int(x) for x in t.shape) != want[n][0]]
    check(not bad_shape, f"{len(have)} tensors with the shapes bert.cpp asks for (wrong: {bad_shape[:5]})")
    f32_needed = [n for n, t in have.items() if (len(t.shape) == 1 or n.endswith("_norm.weight"))
                  and t.tensor_type != GGMLQuantizationType.F32]
    check(not f32_needed, "1-D tensors and norms are F32")
    types = sorted({t.tensor_type.name for t in r.tensors})
    print(f"     tensor types: {types}")
    hp["tokens"] = tokens
    return hp


# ---- Python port of llama.cpp's WPM tokenizer (llama-vocab.cpp, llm_tokenizer_wpm_session) ----

def _is_chinese(c: int) -> bool:
    return (0x4E00 <= c <= 0x9FFF or 0x3400 <= c <= 0x4DBF or 0x20000 <= c <= 0x2A6DF or 0x2A700 <= c <= 0x2B73F
            or 0x2B740 <= c <= 0x2B81F or 0x2B920 <= c <= 0x2CEAF or 0xF900 <= c <= 0xFAFF or 0x2F800 <= c <= 0x2FA1F)


def wpm_preprocess(text: str, lowercase: bool, strip_accents: bool) -> list[str]:
    if strip_accents:
        # llama.cpp's unicode_cpts_normalize_nfd maps each code point to the first
        # code point of its canonical decomposition (so a Hangul syllable becomes
        # its leading jamo); this reproduces its table exactly.
        text = "".join(unicodedata.normalize("NFD", ch)[0] for ch in text)
    words = [""]
    for ch in text:
        c = ord(ch)
        cat = unicodedata.category(ch)
        if ch.isspace():
            if words[-1]:
                words.append("")
            continue
        if c == 0 or c == 0xFFFD or cat.startswith("C"):
            continue
        if strip_accents and cat.startswith("M"):
            continue
        s = ch.lower() if lowercase else ch
        if cat.startswith("P") or (c < 0x7F and cat.startswith("S")) or _is_chinese(c):
            if words[-1]:
                words.append("")
            words[-1] = s
            words.append("")
        else:
            words[-1] += s
    if not words[-1]:
        words.pop()
    return words


def wpm_tokenize(text: str, tok2id: dict[str, int], max_len: int, hp: dict) -> list[int]:
    lower = hp.get("tokenizer.ggml.normalizer.lowercase")
    lower = True if lower is None else lower
    strip = hp.get("tokenizer.ggml.normalizer.strip_accents")
    strip = lower if strip is None else strip
    out = [hp["tokenizer.ggml.bos_token_id"]]
    for word in wpm_preprocess(text, lower, strip):
        w = "\u2581" + word
        n = len(w)
        start = len(out)
        i = 0
        ok = True
        while i < n:
            for j in range(min(n, i + max_len + 1), i, -1):
                tid = tok2id.get(w[i:j])
                if tid is not None:
                    out.append(tid)
                    i = j
                    break
            else:
                ok = False
                break
        if not ok:
            del out[start:]
        if len(out) == start:
            out.append(hp["tokenizer.ggml.unknown_token_id"])
    out.append(hp["tokenizer.ggml.seperator_token_id"])
    return out


# ---- numpy BERT forward pass on the GGUF tensors ----

_erf = np.frompyfunc(math.erf, 1, 1)


def forward(r: GGUFReader, hp: dict, ids: list[int]) -> np.ndarray:
    T = {t.name: np.asarray(t.data, dtype=np.float32) for t in r.tensors}
    eps = hp["bert.attention.layer_norm_epsilon"]
    n_head = hp["bert.attention.head_count"]

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    x = T["token_embd.weight"][ids] + T["position_embd.weight"][: len(ids)]
    if "token_types.weight" in T:
        x = x + T["token_types.weight"][0]
    x = ln(x, T["token_embd_norm.weight"], T["token_embd_norm.bias"])
    n, d = x.shape
    hd = d // n_head
    for i in range(hp["bert.block_count"]):
        b = f"blk.{i}."
        q = x @ T[b + "attn_q.weight"].T + T[b + "attn_q.bias"]
        k = x @ T[b + "attn_k.weight"].T + T[b + "attn_k.bias"]
        v = x @ T[b + "attn_v.weight"].T + T[b + "attn_v.bias"]
        q, k, v = (a.reshape(n, n_head, hd).transpose(1, 0, 2) for a in (q, k, v))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, d)
        a = a @ T[b + "attn_output.weight"].T + T[b + "attn_output.bias"]
        x = ln(a + x, T[b + "attn_output_norm.weight"], T[b + "attn_output_norm.bias"])
        h = x @ T[b + "ffn_up.weight"].T + T[b + "ffn_up.bias"]
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)).astype(np.float32))
        h = h @ T[b + "ffn_down.weight"].T + T[b + "ffn_down.bias"]
        x = ln(h + x, T[b + "layer_output_norm.weight"], T[b + "layer_output_norm.bias"])
    e = x.mean(0)
    return e / np.linalg.norm(e)


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(f"usage: {sys.argv[0]} MODEL.gguf [REFS.json]")
    r = GGUFReader(sys.argv[1])
    hp = structure(r)
    if len(sys.argv) == 3:
        refs = json.load(open(sys.argv[2], encoding="utf-8"))
        tokens = hp["tokens"]
        tok2id = {t: i for i, t in enumerate(tokens)}
        max_len = max(len(t) for t in tokens)
        max_seq = refs.get("max_seq_length", 512)
        same = 0
        worst = 1.0
        for c in refs["cases"]:
            ids = wpm_tokenize(c["text"], tok2id, max_len, hp)
            if ids == c["ids"]:
                same += 1
            else:
                print(f"     tokenizer differs on case {c['id']} ({c['kind']}): llama.cpp-port {len(ids)} pieces, "
                      f"reference {c['n_tokens']}")
            ref_ids = c["ids"]
            run = ref_ids if len(ref_ids) <= max_seq else ref_ids[: max_seq - 1] + [ref_ids[-1]]
            cos = float(np.dot(forward(r, hp, run), np.asarray(c["vector"], dtype=np.float32)))
            worst = min(worst, cos)
            if "vector_untruncated" in c:
                cos2 = float(np.dot(forward(r, hp, ref_ids), np.asarray(c["vector_untruncated"], dtype=np.float32)))
                worst = min(worst, cos2)
        print(f"     llama.cpp-port tokenizer matches the reference ids on {same}/{len(refs['cases'])} texts")
        check(worst >= 0.999, f"numpy forward pass on the GGUF tensors vs reference vectors: min cosine {worst:.7f}")
    if FAIL:
        raise SystemExit(f"{len(FAIL)} check(s) failed")
    print("all checks passed")


if __name__ == "__main__":
    main()
