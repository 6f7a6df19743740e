#!/usr/bin/env python3
"""Convert a BERT sentence-embedding checkpoint into a GGUF file llama.cpp loads.

Input: a sentence-transformers / Hugging Face folder holding
  * config.json              (architectures: BertModel, model_type: bert)
  * model.safetensors        (float32 weights)
  * tokenizer.json           (WordPiece; vocab.txt is used when it is absent)
  * tokenizer_config.json / special_tokens_map.json (special tokens), optional
  * modules.json, 1_Pooling/config.json, sentence_bert_config.json, optional
    (pooling mode, the Normalize module, max_seq_length)

Output: one GGUF (v3) file, written to a temporary file beside the target and
renamed into place, so an interrupted run never leaves a half-written model.

What is written follows llama.cpp's own convert_hf_to_gguf.py (class BertModel)
so that the llama.cpp vendored by llama-cpp-sys-2 0.1.161 (src/models/bert.cpp,
llama-vocab.cpp) loads it as LLM_ARCH_BERT:

  general.architecture = "bert", general.type = "model", general.name,
  general.file_type (1 = MOSTLY_F16, 0 = ALL_F32)
  bert.context_length, bert.embedding_length, bert.feed_forward_length,
  bert.block_count, bert.attention.head_count, bert.attention.layer_norm_epsilon,
  bert.attention.causal = false, bert.pooling_type (1 = MEAN, 2 = CLS)
  tokenizer.ggml.model = "bert" (WPM), tokenizer.ggml.pre, tokenizer.ggml.tokens,
  tokenizer.ggml.token_type, tokenizer.ggml.token_type_count,
  special ids/flags via gguf.SpecialVocab (bos = [CLS], eos = sep = [SEP], unk,
  pad, mask, add_bos/add_eos/add_sep), and the BertNormalizer options
  tokenizer.ggml.normalizer.lowercase / .strip_accents.

The vocabulary is rewritten the way llama.cpp's WordPiece tokenizer expects it
(the "phantom space" form): a word-initial piece "foo" becomes "\u2581foo", a
continuation piece "##bar" becomes "bar", and control tokens ([CLS], [SEP],
[PAD], [UNK], [MASK]) stay as they are.

Tensors are renamed with gguf.TensorNameMap; the pooler (pooler.dense.*) and
embeddings.position_ids are dropped, as upstream does. With --outtype f16 (the
default) 2-D weights become F16 while 1-D tensors, layer norms, the position
and token-type embeddings stay F32, matching upstream's rules.

Two keys are Aula's own (llama.cpp ignores unknown keys):
  aula.embedding.normalize       bool: the sentence-transformers pipeline ends in
                                 a Normalize module, so vectors must be
                                 L2-normalised after pooling;
  aula.embedding.max_seq_length  uint32: sentence-transformers truncates inputs
                                 to this many word pieces ([CLS] and [SEP]
                                 included), written only when known.

The output depends only on the input files and the gguf package version (pinned
in fetch_models.py), so two runs give byte-identical files.

Needs numpy and gguf (pip install gguf==0.19.0); not torch or transformers.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - message for a bare environment
    raise SystemExit("embedding_to_gguf: the `gguf` package is needed (pip install gguf==0.19.0)")

NORMALIZE_KEY = "aula.embedding.normalize"
MAX_SEQ_KEY = "aula.embedding.max_seq_length"
# Not (yet) in gguf-py's Keys, but read by the vendored llama-vocab.cpp.
NORMALIZER_LOWERCASE_KEY = "tokenizer.ggml.normalizer.lowercase"
NORMALIZER_STRIP_ACCENTS_KEY = "tokenizer.ggml.normalizer.strip_accents"

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Memory-map every tensor of a .safetensors file as a numpy array."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise SystemExit(f"embedding_to_gguf: unsupported dtype {info['dtype']} for {name}")
        start, end = info["data_offsets"]
        arr = mm[base + start: base + end].view(dtype).reshape(info["shape"])
        out[name] = arr
    return out


def load_json(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_vocab(model_dir: Path, vocab_size: int):
    """Return (tokens, toktypes, normalizer, is_bert_wordpiece) from tokenizer.json or vocab.txt."""
    tok_json = load_json(model_dir / "tokenizer.json")
    special_contents: set[str] = set()
    if tok_json is not None:
        model = tok_json["model"]
        if model.get("type") != "WordPiece":
            raise SystemExit(f"embedding_to_gguf: tokenizer model is {model.get('type')}, not WordPiece")
        id_to_tok = {i: t for t, i in model["vocab"].items()}
        added = {a["id"]: a for a in tok_json.get("added_tokens", [])}
        for a in added.values():
            id_to_tok.setdefault(a["id"], a["content"])
        normalizer = tok_json.get("normalizer") or {}
        pre = tok_json.get("pre_tokenizer") or {}
        is_bert = normalizer.get("type") == "BertNormalizer" and pre.get("type") == "BertPreTokenizer"
    else:
        vocab_txt = model_dir / "vocab.txt"
        if not vocab_txt.is_file():
            raise SystemExit("embedding_to_gguf: neither tokenizer.json nor vocab.txt found")
        with open(vocab_txt, encoding="utf-8") as f:
            id_to_tok = {i: line.rstrip("\n") for i, line in enumerate(f)}
        added = {}
        cfg = load_json(model_dir / "tokenizer_config.json") or {}
        lower = bool(cfg.get("do_lower_case", True))
        normalizer = {"type": "BertNormalizer", "lowercase": lower, "strip_accents": cfg.get("strip_accents")}
        is_bert = True
        stm = load_json(model_dir / "special_tokens_map.json") or {}
        for v in stm.values():
            special_contents.add(v if isinstance(v, str) else v.get("content", ""))

    if vocab_size < len(id_to_tok):
        vocab_size = len(id_to_tok)
    tokens: list[str] = []
    toktypes: list[int] = []
    for i in range(vocab_size):
        tok = id_to_tok.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
            continue
        a = added.get(i)
        if (a is not None and a.get("special")) or tok in special_contents:
            toktypes.append(gguf.TokenType.CONTROL)
        elif a is not None:
            toktypes.append(gguf.TokenType.USER_DEFINED)
        else:
            toktypes.append(gguf.TokenType.NORMAL)
        tokens.append(tok)

    # phantom-space form used by llama.cpp's WPM tokenizer
    def phantom(tok: str, toktype: int) -> str:
        if toktype == gguf.TokenType.CONTROL:
            return tok
        if tok.startswith("##"):
            return tok[2:]
        return "\u2581" + tok

    tokens = [phantom(t, tt) for t, tt in zip(tokens, toktypes)]
    if len(set(tokens)) != len(tokens):
        raise SystemExit("embedding_to_gguf: vocabulary has duplicates after the phantom-space rewrite")
    return tokens, toktypes, normalizer, is_bert


def sentence_transformers_info(model_dir: Path):
    """(pooling_type or None, normalize flag, max_seq_length or None) from the sentence-transformers files."""
    pooling = None
    normalize = False
    modules = load_json(model_dir / "modules.json")
    if isinstance(modules, list):
        for mod in modules:
            typ = mod.get("type", "")
            if typ == "sentence_transformers.models.Pooling" and pooling is None:
                cfg = load_json(model_dir / mod["path"] / "config.json") or {}
                if cfg.get("pooling_mode_mean_tokens"):
                    pooling = gguf.PoolingType.MEAN
                elif cfg.get("pooling_mode_cls_token"):
                    pooling = gguf.PoolingType.CLS
                elif cfg.get("pooling_mode_lasttoken"):
                    pooling = gguf.PoolingType.LAST
                else:
                    raise SystemExit("embedding_to_gguf: only MEAN, CLS and LAST pooling are supported")
            elif typ == "sentence_transformers.models.Normalize":
                normalize = True
            elif typ.endswith(".Dense"):
                raise SystemExit("embedding_to_gguf: Dense modules after pooling are not supported")
    st_cfg = load_json(model_dir / "sentence_bert_config.json") or {}
    max_seq = st_cfg.get("max_seq_length")
    return pooling, normalize, max_seq


def convert(model_dir: Path, out_path: Path, outtype: str, name: str | None) -> None:
    config = load_json(model_dir / "config.json")
    if config is None:
        raise SystemExit(f"embedding_to_gguf: {model_dir}/config.json not found")
    archs = config.get("architectures") or []
    if config.get("model_type") != "bert" and "BertModel" not in archs:
        raise SystemExit(f"embedding_to_gguf: not a BERT model (architectures={archs})")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit("embedding_to_gguf: only absolute position embeddings are supported")
    if config.get("hidden_act", "gelu") != "gelu":
        raise SystemExit(f"embedding_to_gguf: hidden_act {config.get('hidden_act')} is not gelu")

    n_layer = int(config["num_hidden_layers"])
    n_embd = int(config["hidden_size"])
    n_ff = int(config["intermediate_size"])
    n_head = int(config["num_attention_heads"])
    n_ctx = int(config["max_position_embeddings"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    n_types = int(config.get("type_vocab_size", 1))

    tokens, toktypes, normalizer, is_bert_wp = load_vocab(model_dir, int(config.get("vocab_size", 0)))
    pooling, normalize, max_seq = sentence_transformers_info(model_dir)
    if pooling is None:
        pooling = gguf.PoolingType.MEAN  # what a plain BertModel sentence encoder is used with
    ftype = gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32

    arch = gguf.MODEL_ARCH.BERT
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    tmap = gguf.get_tensor_name_map(arch, n_layer)

    weights = read_safetensors(model_dir / "model.safetensors")
    renamed: list[tuple[str, np.ndarray]] = []
    for hf_name in weights:
        n = hf_name[5:] if hf_name.startswith("bert.") else hf_name
        if n.endswith(".gamma"):
            n = n[:-6] + ".weight"
        if n.endswith(".beta"):
            n = n[:-5] + ".bias"
        if n in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            continue
        if n.startswith("cls.predictions") or n.startswith("cls.seq_relationship"):
            continue
        new = tmap.get_name(n, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"embedding_to_gguf: cannot map tensor {hf_name!r}")
        renamed.append((new, weights[hf_name]))

    def order(item):
        nm = item[0]
        if nm.startswith("blk."):
            parts = nm.split(".", 2)
            return (1, int(parts[1]), parts[2])
        return (0, 0, nm)

    renamed.sort(key=order)

    out_path = out_path.resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=".partial-", suffix=".gguf")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, arch_name, use_temp_file=False)
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(name or model_dir.name)
        w.add_context_length(n_ctx)
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(n_ff)
        w.add_block_count(n_layer)
        w.add_head_count(n_head)
        w.add_layer_norm_eps(eps)
        w.add_causal_attention(False)
        w.add_pooling_type(pooling)
        w.add_file_type(ftype)

        w.add_tokenizer_model("bert")
        # llama.cpp ignores tokenizer.ggml.pre for WordPiece vocabs; upstream's
        # converter hashes the tokenizer and gets "bert-bge" for the BERT
        # uncased family (BertNormalizer + BertPreTokenizer + WordPiece).
        w.add_tokenizer_pre("bert-bge" if is_bert_wp else "default")
        w.add_token_list(tokens)
        w.add_token_types(toktypes)
        w.add_token_type_count(n_types)
        special = gguf.SpecialVocab(model_dir, n_vocab=len(tokens),
                                    special_token_types=("bos", "eos", "unk", "sep", "pad", "mask"))
        special.add_to_gguf(w, quiet=True)
        lower = bool(normalizer.get("lowercase", True))
        strip = normalizer.get("strip_accents")
        w.add_bool(NORMALIZER_LOWERCASE_KEY, lower)
        w.add_bool(NORMALIZER_STRIP_ACCENTS_KEY, lower if strip is None else bool(strip))

        w.add_bool(NORMALIZE_KEY, normalize)
        if max_seq:
            w.add_uint32(MAX_SEQ_KEY, int(max_seq))

        for new, arr in renamed:
            data = np.ascontiguousarray(arr, dtype=np.float32)
            keep_f32 = (
                data.ndim <= 1
                or new.endswith("_norm.weight")
                or not new.endswith(".weight")
                or new in ("position_embd.weight", "token_types.weight")
            )
            if ftype == gguf.LlamaFileType.MOSTLY_F16 and not keep_f32:
                data = data.astype(np.float16)
            w.add_tensor(new, data)

        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path, help="folder with config.json, model.safetensors, tokenizer.json")
    ap.add_argument("output", type=Path, help="GGUF file to write")
    ap.add_argument("--outtype", choices=("f16", "f32"), default="f16")
    ap.add_argument("--name", help="general.name (default: the folder's name)")
    args = ap.parse_args(argv)
    convert(args.model_dir, args.output, args.outtype, args.name)
    print(f"embedding_to_gguf: wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
