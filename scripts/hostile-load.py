"""A class under attack from within (issue 30): normal students' latency and
errors, and the gateway's memory, with and without four hostile students.

    .venv/bin/python scripts/hostile-load.py [--seconds 60] [--students 20]
        [--attackers 1,2,3,4] [--embed-threads N] [--attackers-nice N]

Starts `openai-mock` (4 tokens x 25 ms, 64 slots) and `aula serve`
(target/release/aula) on loopback in a temporary home with the mock as the
chat model and all-MiniLM-L6-v2 (from ~/.local/share/aula/models) for
search; a teacher's store of course notes, shared with the class; 20
students and 4 attackers with keys. Then two phases of --seconds each,
quiet (students only) and hostile (students and attackers at once):

  students   each in a loop, 0.3-0.8 s apart: a chat completion; every 3rd
             time a search of the teacher's store; every 5th an upload of a
             2 KB file, then its delete.
  attacker 1 uploads whose part headers never end (4 connections, reopened
             as the gateway drops them), each pushing until it is held back.
  attacker 2 anonymous page loads (`GET /signin`, no cookie), as fast as
             one connection goes (bounded at 60,000).
  attacker 3 a 40 MB fine-tuning file, then job creates naming it, two at a
             time (each refused: over max_job_tokens, or the jobs-at-once
             limit) — only when the trainer's Python is present.
  attacker 4 at most 2 requests a minute, and keeps attaching files to two
             stores of hers, so her ingestion meets her rate limit.

The attackers run in a process of their own (in the students' process
their loops would take the students' client threads' turns at Python's
lock); with --attackers-nice N that process runs at that niceness, as a
stand-in for attackers whose clients run on laptops of their own, not on
the box (the gateway and engines still do all the attack's work). The
attack's own volume is printed too (page loads made, header bytes
sent, fine-tuning creates, ingestion uploads), so a nicer attacker that
attacks less shows as such. Prints one JSON object: per phase, the students' requests, errors (any
non-2xx, or a transport error) and p50/p95/p99 latency per kind, and the
gateway's RSS (idle before the phases, and the peak in each). Every
request goes to 127.0.0.1 only, and every loop ends with its phase.
"""
import argparse, json, os, pathlib, random, re, socket, subprocess, sys, tempfile, threading, time
import urllib.request, urllib.error

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = pathlib.Path(os.environ.get("AULA_MODELS", pathlib.Path.home() / ".local/share/aula/models"))
AULA = os.environ.get("AULA", str(ROOT / "target/release/aula"))
MOCK = str(pathlib.Path(AULA).with_name("openai-mock"))

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=float, default=60)
ap.add_argument("--students", type=int, default=20)
ap.add_argument("--attackers", default="1,2,3,4", help="which attackers run in the hostile phase")
ap.add_argument("--embed-threads", type=int, help="`threads` of the embedding model (default: the engine's, every core)")
ap.add_argument("--attackers-nice", type=int, default=0, help="niceness of the attackers' process (0: as the students')")
args = ap.parse_args()
which = {int(a) for a in args.attackers.split(",") if a}

home = pathlib.Path(tempfile.mkdtemp(prefix="aula-hostile-"))
(home / "models").mkdir()
os.symlink(MODELS / "all-minilm-l6-v2.gguf", home / "models" / "all-minilm-l6-v2.gguf")
procs = []


def start(cmd, log, env=None):
    f = open(home / log, "w")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    procs.append(p)
    for _ in range(600):
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", (home / log).read_text())
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            break
        time.sleep(0.1)
    sys.exit(f"{cmd[0]} did not start: {(home / log).read_text()}")


def call(method, url, key=None, body=None, headers=None, timeout=120):
    """(status, parsed JSON or text); status 0 for a transport error."""
    h = dict(headers or {})
    data = None
    if body is not None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        else:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
    if key:
        h["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    except Exception as e:  # connection refused, reset, timeout
        return 0, str(e)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def multipart(name, content, purpose):
    b = "hostileLoadBoundary"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{b}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={b}"}


def upload(url, key, name, content, purpose="assistants"):
    body, h = multipart(name, content, purpose)
    return call("POST", f"{url}/v1/files", key, body, h)


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 1)


def aula(*a):
    out = subprocess.run([AULA, *a], env=dict(os.environ, AULA_HOME=str(home)), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"aula {' '.join(a)}: {out.stderr}")
    return out.stdout.strip()


try:
    mock, mock_url = start([MOCK, "0", "--token-ms", "25"], "mock.log")
    train_python = os.environ.get("AULA_TRAIN_PYTHON", str(pathlib.Path.home() / ".cache/aula/train-venv/bin/python"))
    fine_tuning = pathlib.Path(train_python).exists() and (MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()
    cfg = (f'[[models]]\nname = "mock"\nurl = "{mock_url}"\nparallel = 64\n\n'
           f'[[models]]\nname = "minilm"\ngguf = "all-minilm-l6-v2.gguf"\n'
           + (f'threads = {args.embed_threads}\n' if args.embed_threads else '') + '\n')
    if fine_tuning:
        os.symlink(MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf", home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
        cfg += (f'[[models]]\nname = "smol"\ngguf = "SmolLM2-135M-Instruct.Q4_1.gguf"\n\n'
                f'[fine_tuning]\npython = "{train_python}"\n\n')
    cfg += '[rag]\nembedding_model = "minilm"\n\n[[limits]]\nuser = "a4"\nrequests_per_minute = 2\n'
    (home / "aula.toml").write_text(cfg)
    aula("users", "add", "tina", "--role", "teacher", "--group", "cs101")
    tina = aula("keys", "create", "tina")
    students = []
    for i in range(args.students):
        aula("users", "add", f"s{i:02}", "--group", "cs101")
        students.append(aula("keys", "create", f"s{i:02}"))
    attackers = []
    for i in range(1, 5):
        aula("users", "add", f"a{i}")
        attackers.append(aula("keys", "create", f"a{i}"))
    server, url = start([AULA, "serve", "--port", "0"], "serve.log", dict(os.environ, AULA_HOME=str(home)))
    port = int(url.rsplit(":", 1)[1])

    # The teacher's course notes, shared with the class, ingested first.
    st, store = call("POST", f"{url}/v1/vector_stores", tina, {"name": "notes", "shared_with_groups": ["cs101"]})
    assert st == 200, store
    topics = ["mitochondria make ATP", "tides follow the moon", "enzymes lower activation energy",
              "osmosis moves water", "photosynthesis makes sugar", "plate tectonics moves continents"]
    ids = []
    for i, t in enumerate(topics):
        st, f = upload(url, tina, f"note{i}.txt", (f"Lecture {i}: {t}. " * 40).encode())
        assert st == 200, f
        ids.append(f["id"])
    st, r = call("POST", f"{url}/v1/vector_stores/{store['id']}/file_batches", tina, {"file_ids": ids})
    assert st == 200, r
    for _ in range(600):
        st, s = call("GET", f"{url}/v1/vector_stores/{store['id']}", tina)
        if s["file_counts"]["completed"] == len(ids):
            break
        time.sleep(0.5)
    else:
        sys.exit(f"the notes were not ingested: {s}")

    def student(key, stop, lat, errors):
        n = 0
        rnd = random.Random(key)
        while not stop.is_set():
            n += 1
            t = time.monotonic()
            st, r = call("POST", f"{url}/v1/chat/completions", key,
                         {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            lat.setdefault("chat", []).append(time.monotonic() - t)
            if st != 200:
                errors.append(("chat", st, str(r)[:200]))
            if n % 3 == 0:
                t = time.monotonic()
                st, r = call("POST", f"{url}/v1/vector_stores/{store['id']}/search", key,
                             {"query": rnd.choice(topics), "max_num_results": 3})
                lat.setdefault("search", []).append(time.monotonic() - t)
                if st != 200:
                    errors.append(("search", st, str(r)[:200]))
            if n % 5 == 0:
                t = time.monotonic()
                st, r = upload(url, key, "mine.txt", b"my notes " * 230)
                lat.setdefault("upload", []).append(time.monotonic() - t)
                if st != 200:
                    errors.append(("upload", st, str(r)[:200]))
                else:
                    call("DELETE", f"{url}/v1/files/{r['id']}", key)
            stop.wait(rnd.uniform(0.3, 0.8))

    import multiprocessing
    volume = {k: multiprocessing.get_context("fork").Value("q", 0, lock=True)
              for k in ("page_loads", "header_bytes", "finetune_creates", "ingest_uploads")}

    def count(k, n=1):
        with volume[k].get_lock():
            volume[k].value += n

    def endless_headers(key, stop):
        head = (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000000\r\n\r\n"
                f"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nX-Long: ").encode()
        chunk = b"a" * 65536
        while not stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(head)
                while not stop.is_set():
                    s.sendall(chunk)  # blocks (then times out) once held back
                    count("header_bytes", len(chunk))
            except OSError:
                pass
            finally:
                try:
                    s.close()
                except Exception:
                    pass
            stop.wait(0.2)

    def session_flood(stop):
        for _ in range(60_000):
            if stop.is_set():
                return
            call("GET", f"{url}/signin", timeout=10)
            count("page_loads")

    def finetune_creates(key, stop):
        line = json.dumps({"messages": [{"role": "user", "content": "What is the course mascot?"},
                                        {"role": "assistant", "content": "The course mascot is a small owl. " * 14}]})
        data = ((line + "\n") * ((40 << 20) // (len(line) + 1))).encode()
        st, f = upload(url, key, "big.jsonl", data, "fine-tune")
        if st != 200:
            return
        while not stop.is_set():
            ts = [threading.Thread(target=call, args=("POST", f"{url}/v1/fine_tuning/jobs", key,
                                                      {"model": "smol", "training_file": f["id"]}))
                  for _ in range(2)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            count("finetune_creates", 2)
            stop.wait(0.2)

    def rate_limited_ingestion(key, stop):
        stores = []
        for k in range(2):
            st, s = call("POST", f"{url}/v1/vector_stores", key, {"name": f"mine{k}"})
            if st == 200:
                stores.append(s["id"])
        i = 0
        while not stop.is_set() and stores:
            i += 1
            text = " ".join(f"word{w % 211}" for w in range(12_000)).encode()
            st, f = upload(url, key, f"long{i}.txt", text)
            if st == 200:
                call("POST", f"{url}/v1/vector_stores/{stores[i % 2]}/files", key, {"file_id": f["id"]})
                count("ingest_uploads")
            stop.wait(1.0)

    def phase(hostile):
        stop = threading.Event()
        lat, errors = {}, []
        peak = [rss(server.pid)]

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss(server.pid))
                stop.wait(0.25)
        threads = [threading.Thread(target=sample)]
        threads += [threading.Thread(target=student, args=(k, stop, lat, errors)) for k in students]
        # The attackers run in a process of their own, as they would on
        # machines of their own: in this one, their loops would take the
        # students' client threads' turns at Python's lock and show up as
        # the students' latency.
        attack = None
        if hostile:
            attack_stop = multiprocessing.get_context("fork").Event()

            def attackers_main():
                if args.attackers_nice:
                    os.nice(args.attackers_nice)
                ts = []
                if 1 in which:
                    ts += [threading.Thread(target=endless_headers, args=(attackers[0], attack_stop)) for _ in range(4)]
                if 2 in which:
                    ts.append(threading.Thread(target=session_flood, args=(attack_stop,)))
                if fine_tuning and 3 in which:
                    ts.append(threading.Thread(target=finetune_creates, args=(attackers[2], attack_stop)))
                if 4 in which:
                    ts.append(threading.Thread(target=rate_limited_ingestion, args=(attackers[3], attack_stop)))
                for t in ts:
                    t.daemon = True
                    t.start()
                attack_stop.wait()
                for t in ts:
                    t.join(timeout=30)
            attack = multiprocessing.get_context("fork").Process(target=attackers_main)
            attack.start()
        for t in threads:
            t.daemon = True
            t.start()
        time.sleep(args.seconds)
        stop.set()
        if attack:
            attack_stop.set()
            attack.join(timeout=60)
            if attack.is_alive():
                attack.kill()
        for t in threads:
            t.join(timeout=30)
        return {
            "requests": {k: len(v) for k, v in lat.items()},
            "errors": len(errors),
            "first_errors": errors[:5],
            "p50_ms": {k: pct(v, 50) for k, v in lat.items()},
            "p95_ms": {k: pct(v, 95) for k, v in lat.items()},
            "p99_ms": {k: pct(v, 99) for k, v in lat.items()},
            "peak_rss_mb": round(peak[0] / 1e6, 1),
            **({"attack_volume": {k: v.value for k, v in volume.items()}} if hostile else {}),
        }

    idle = rss(server.pid)
    quiet = phase(False)
    hostile = phase(True)
    print(json.dumps({"students": args.students, "seconds": args.seconds, "attackers": sorted(which),
                      "attackers_nice": args.attackers_nice, "embed_threads": args.embed_threads,
                      "fine_tuning_attack": fine_tuning and 3 in which,
                      "idle_rss_mb": round(idle / 1e6, 1), "quiet": quiet, "hostile": hostile,
                      "peak_rss_over_idle_mb": round(hostile["peak_rss_mb"] - idle / 1e6, 1)}, indent=1))
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
