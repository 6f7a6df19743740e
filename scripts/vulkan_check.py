"""The checks of scripts/vulkan-check.sh: one engine per setting, on free
loopback ports; the device's buffers against `aula plan --gpu-layers`'s
split; prints what it saw and exits non-zero on a failed check."""
import atexit
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

MODEL = pathlib.Path(os.environ.get("AULA_HOME", pathlib.Path.home() / ".local/share/aula")) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Name three colours of the rainbow."
TOKENS = 32


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(exe, extra):
    port = free_port()
    p = subprocess.Popen([exe, "engine", "--model", str(MODEL), "--port", str(port),
                          "--name", "check", "--parallel", "1", "--context", "1024", *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    atexit.register(p.kill)  # a failed request must not leave the engine running
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                return p, url, json.load(r)
        except Exception:
            if p.poll() is not None:
                sys.exit(f"{exe} {extra} exited: {p.stderr.read()[-2000:]}")
            time.sleep(0.5)
    p.kill()
    sys.exit(f"{exe} {extra} did not come up")


def answer(url):
    body = json.dumps({"model": "check", "messages": [{"role": "user", "content": PROMPT}],
                       "max_tokens": TOKENS, "temperature": 0}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)["choices"][0]["message"]["content"]


def planned(layers):
    """`aula plan`'s device split at the engine's settings."""
    out = subprocess.run([os.environ["AULA_CPU"], "plan", str(MODEL), "--context", "1024", "--users", "1",
                          "--gpu-layers", layers, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["offload"][0]["split"]


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


failed = False
p, url, cpu_health = serve(os.environ["AULA_CPU"], [])
cpu_answer = answer(url)
p.terminate(); p.wait()
cpu_model = cpu_health["memory"]["model_buffer_bytes"]
print(f"CPU build: model buffers {cpu_model / 2**20:.1f} MiB; answer: {cpu_answer!r}")
for layers in ["all", "15", "0"]:
    t0 = time.time()
    p, url, h = serve(os.environ["AULA_VK"], ["--gpu-layers", layers, "--device", "Vulkan0"])
    ans = answer(url)
    secs = time.time() - t0
    p.terminate(); p.wait()
    vk = h["placement"]["buffers"].get("Vulkan0", {})
    off = h["placement"]["layers_offloaded"]
    dev = [d for d in h["devices"] if d["name"] == "Vulkan0"]
    prefix = common_prefix(ans, cpu_answer)
    print(f"--gpu-layers {layers:>3}: offloaded {off}, Vulkan0 model {vk.get('model_bytes', 0) / 2**20:.1f} MiB, "
          f"KV {vk.get('kv_cache_bytes', 0) / 2**20:.1f} MiB, compute {vk.get('compute_bytes', 0) / 2**20:.1f} MiB; "
          f"device {dev[0]['description'] if dev else '?'}; answer matches the CPU build's for {prefix}/{len(cpu_answer)} chars "
          f"({secs:.0f} s incl. load): {ans!r}")
    plan = planned(layers)
    for key, got, tol in [("weights_device_bytes", vk.get("model_bytes", 0), 0.01),
                          ("kv_device_bytes", vk.get("kv_cache_bytes", 0), 0.01),
                          ("compute_device_bytes", vk.get("compute_bytes", 0), 0.05)]:
        want = plan[key]
        ok = abs(want - got) <= tol * max(got, 1)
        print(f"  plan {key}: {want / 2**20:.1f} MiB, measured {got / 2**20:.1f} MiB"
              f" ({(want - got) / max(got, 1):+.1%}){'' if ok else '  FAIL: beyond ' + format(tol, '.0%')}")
        failed |= not ok
    if not dev:
        print("  FAIL: no Vulkan0 device"); failed = True
    total = off[1] if off else 0
    want = {"all": total, "15": 15, "0": 0}[layers]
    if not off or off[0] != want:
        print(f"  FAIL: expected {want} layers offloaded"); failed = True
    if layers == "all" and abs(vk.get("model_bytes", 0) - cpu_model) > 0.05 * cpu_model:
        print("  FAIL: the device holds a different amount of weights than the CPU build"); failed = True
    if layers == "0" and vk.get("model_bytes", 0) > 0.05 * cpu_model:
        print("  FAIL: weights on the device with no layers offloaded"); failed = True
    if prefix < min(len(cpu_answer), 16):
        print("  FAIL: the answer departs from the CPU build's within 16 characters"); failed = True
sys.exit(1 if failed else 0)
