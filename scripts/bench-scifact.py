"""Retrieval quality and speed of Aula's vector stores on BEIR SciFact.

    .venv/bin/python scripts/bench-scifact.py [--docs N] [--queries N]

Starts `aula serve` (target/release/aula) on loopback in a temporary home
with all-MiniLM-L6-v2 (from ~/.local/share/aula/models, `bash
scripts/setup.sh` fetches it), uploads every SciFact abstract (title and
text) through /v1/files, attaches them in batches of 500, waits for
ingestion, then asks each of the 300 test queries through
/v1/vector_stores/{id}/search in each mode (hybrid, dense, lexical) and
scores nDCG@10 against the qrels (a document's score is its best chunk's).
Prints one JSON object: nDCG@10 per mode, ingestion time, search latency
p50/p95 per mode. Data: ../shared/data/scifact/ (see its README).

With `--database postgres://...` the gateway keeps its state there, and
`--search database,memory` asks the queries once per place a store is
searched (`[rag] search`): the documents are ingested once, then the
gateway is restarted on the same database for each place.
"""
import argparse, gzip, json, math, os, pathlib, re, shutil, signal, subprocess, sys, tempfile, time
import openai
from openai import OpenAI

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
MODELS = pathlib.Path(os.environ.get("AULA_MODELS", pathlib.Path.home() / ".local/share/aula/models"))

ap = argparse.ArgumentParser()
ap.add_argument("--docs", type=int, default=0, help="only the first N documents (0: all)")
ap.add_argument("--queries", type=int, default=0, help="only the first N queries (0: all)")
ap.add_argument("--workers", type=int, default=2)
ap.add_argument("--modes", default="hybrid,dense,lexical")
ap.add_argument("--database", default="", help="a PostgreSQL URL (default: SQLite in the temporary home)")
ap.add_argument("--existing", action="store_true", help="search the store named scifact already in --database (no ingestion)")
ap.add_argument("--search", default="", help="database,memory: where stores are searched, one pass each")
args = ap.parse_args()
places = [p for p in args.search.split(",") if p] or [""]

corpus = [json.loads(l) for l in gzip.open(DATA / "corpus.jsonl.gz", "rt")]
if args.docs:
    corpus = corpus[: args.docs]
queries = [l.rstrip("\n").split("\t", 1) for l in gzip.open(DATA / "queries.test.tsv.gz", "rt") if l.strip()]
qrels = {}
for l in open(DATA / "qrels.test.txt"):
    p = l.split()
    if len(p) == 4 and p[3].isdigit():
        qrels.setdefault(p[0], {})[p[2]] = int(p[3])
queries = [q for q in queries if q[0] in qrels]
if args.queries:
    queries = queries[: args.queries]

home = pathlib.Path(tempfile.mkdtemp(prefix="aula-scifact-"))
(home / "models").mkdir()
os.symlink(MODELS / "all-minilm-l6-v2.gguf", home / "models" / "all-minilm-l6-v2.gguf")
env = dict(os.environ, AULA_HOME=str(home))
proc = None


def start(place):
    """`aula serve` with stores searched in `place` ("" for the default)."""
    global proc
    if proc:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    server = f'[server]\ndatabase = "{args.database}"\n\n' if args.database else ""
    search = f'search = "{place}"\n' if place else ""
    (home / "aula.toml").write_text(
        f'{server}[[models]]\nname = "minilm"\ngguf = "all-minilm-l6-v2.gguf"\n\n'
        f'[rag]\nembedding_model = "minilm"\ningest_workers = {args.workers}\n{search}')
    log = home / f"serve-{place or 'default'}.log"
    proc = subprocess.Popen([str(ROOT / "target/release/aula"), "serve", "--port", "0", "--config", str(home / "aula.toml")],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    for _ in range(600):
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            return OpenAI(base_url=m.group(1) + "/v1", api_key="none", max_retries=2, timeout=600)
        time.sleep(0.1)
    raise SystemExit(log.read_text())


def ingest(c):
    """Upload every abstract, attach them all, wait: (upload s, ingest s, store, its state)."""
    t0 = time.time()
    ids = {}
    for d in corpus:
        text = (d.get("title", "") + "\n\n" + d.get("text", "")).strip()
        f = c.files.create(file=(f"{d['_id']}.txt", text.encode()), purpose="assistants")
        ids[f.id] = d["_id"]
    t_upload = time.time() - t0
    store = c.vector_stores.create(name="scifact")
    t1 = time.time()
    fids = list(ids)
    for i in range(0, len(fids), 500):
        while True:
            try:
                c.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=fids[i:i + 500])
                break
            except openai.RateLimitError:  # at most 2,000 files may wait: attach more as they finish
                time.sleep(5)
    while True:
        s = c.vector_stores.retrieve(store.id)
        if s.file_counts.in_progress == 0:
            break
        time.sleep(2)
    t_ingest = time.time() - t1
    assert s.file_counts.completed == len(fids), s.file_counts
    return t_upload, t_ingest, store, s


try:
    c = start(places[0])

    if args.existing:
        store = next(x for x in c.vector_stores.list(limit=100) if x.name == "scifact")
        s = c.vector_stores.retrieve(store.id)
        t_upload = t_ingest = float("nan")
    else:
        t_upload, t_ingest, store, s = ingest(c)

    def ndcg10(ranked, rel):
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        ideal = sorted(rel.values(), reverse=True)[:10]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        return dcg / idcg if idcg else 0.0

    count = "SELECT COUNT(*), SUM(tokens) FROM chunks"
    if args.database:
        row = subprocess.run(["psql", args.database, "-Atc", count], capture_output=True, text=True, check=True).stdout
        chunks, tokens = (int(x) for x in row.strip().split("|"))
    else:
        import sqlite3
        db = sqlite3.connect(f"file:{home / 'aula.db'}?mode=ro", uri=True)
        chunks, tokens = db.execute(count).fetchone()
        db.close()
    out = {"documents": len(corpus), "queries": len(queries), "upload_s": round(t_upload, 1),
           "ingest_s": round(t_ingest, 1), "ingest_docs_per_s": round(len(corpus) / t_ingest, 1),
           "chunks": chunks, "chunk_tokens": tokens, "ingest_chunks_per_s": round(chunks / t_ingest, 1),
           "ingest_tokens_per_s": round(tokens / t_ingest) if t_ingest == t_ingest else None,
           "usage_bytes": s.usage_bytes, "modes": {}}
    for i, place in enumerate(places):
        if i:
            c = start(place)
        for mode in args.modes.split(","):
            scores, lat = [], []
            for qid, text in queries:
                t = time.time()
                r = c.vector_stores.search(vector_store_id=store.id, query=text, max_num_results=50, extra_body={"search_mode": mode})
                lat.append(time.time() - t)
                ranked = []
                for hit in r.data:
                    doc = hit.filename.rsplit(".", 1)[0]
                    if doc not in ranked:
                        ranked.append(doc)
                scores.append(ndcg10(ranked, qrels[qid]))
            lat.sort()
            out["modes"][f"{place}:{mode}" if place else mode] = {
                "ndcg@10": round(sum(scores) / len(scores), 4),
                "p50_ms": round(1000 * lat[len(lat) // 2], 1),
                "p95_ms": round(1000 * lat[int(len(lat) * 0.95) - 1], 1)}
    print(json.dumps(out, indent=1))
finally:
    if proc:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(home, ignore_errors=True)
