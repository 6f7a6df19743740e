"""Vector stores and /v1/responses with file_search through the official
`openai` client, against `aula serve` (run by tests/rag.rs).

argv: URL CHAT_MODEL TEACHER_KEY STUDENT_IN_GROUP_KEY OTHER_STUDENT_KEY
"""
import io, json, sys, zipfile
import openai
from openai import OpenAI

url, chat, tina_key, ada_key, bob_key = sys.argv[1:6]
tina = OpenAI(base_url=url + "/v1", api_key=tina_key, max_retries=0)
ada = OpenAI(base_url=url + "/v1", api_key=ada_key, max_retries=0)
bob = OpenAI(base_url=url + "/v1", api_key=bob_key, max_retries=0)


def pdf(text, encrypted=False):
    """A one-page PDF with `text` in Helvetica, offsets computed; `encrypted`:
    with a standard security handler whose password is not empty."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Filter /Standard /V 2 /R 3 /Length 128 /P -3904 /O <" + b"00" * 32 + b"> /U <" + b"11" * 32 + b"> >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    enc = b" /Encrypt 6 0 R /ID [<" + b"ab" * 16 + b"> <" + b"ab" * 16 + b">]" if encrypted else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, enc, xref)
    return bytes(out)


def docx(paragraphs):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
        z.writestr("word/document.xml", f'<w:document xmlns:w="x"><w:body>{body}</w:body></w:document>')
    return buf.getvalue()


def bomb():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("word/document.xml", "w") as f:
            block = b"<w:t>" + b"a" * (1 << 20)
            for _ in range(80):
                f.write(block)
    return buf.getvalue()


docs = {
    "photosynthesis.md": b"# Photosynthesis\n\nPlants use chlorophyll to capture sunlight and turn carbon dioxide and water into glucose and oxygen. This happens in the chloroplasts.\n",
    "mitochondria.html": b"<html><body><h1>Mitochondria</h1><p>The mitochondria is the powerhouse of the cell: it makes ATP by cellular respiration.</p><script>bad()</script></body></html>",
    "volcanoes.pdf": pdf("Volcanoes erupt when magma rises through the crust of the earth."),
    "tides.docx": docx(["Tides are caused by the gravity of the moon.", "Spring tides happen at full and new moon."]),
}
store = tina.vector_stores.create(name="cs101 notes", extra_body={"shared_with_groups": ["cs101"]})
assert store.object == "vector_store" and store.name == "cs101 notes", store
weeks = {"photosynthesis.md": 1, "mitochondria.html": 2, "volcanoes.pdf": 3, "tides.docx": 4}
ids = {}
for name, data in docs.items():
    vf = tina.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=(name, data), attributes={"week": weeks[name], "kind": name.split(".")[1]},
        poll_interval_ms=200)
    assert vf.status == "completed", (name, vf)
    ids[name] = vf.id

# Bad files fail alone, with a reason.
for name, data, why in [("broken.pdf", b"%PDF-1.7\n1 0 obj garbage", "PDF"),
                        ("bomb.docx", bomb(), "inflates past"),
                        ("secret.pdf", pdf("Exam answers", encrypted=True), "encrypted"),
                        ("binary.txt", bytes(range(256)) * 4, "not UTF-8")]:
    vf = tina.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=(name, data), poll_interval_ms=200)
    assert vf.status == "failed" and vf.last_error is not None and why in vf.last_error.message, (name, vf)
store = tina.vector_stores.retrieve(store.id)
assert store.file_counts.completed == 4 and store.file_counts.failed == 4, store.file_counts
assert store.status == "completed" and store.usage_bytes > 0, store

try:
    tina.files.create(file=("empty.txt", b""), purpose="assistants")
    raise SystemExit("an empty file was accepted")
except openai.BadRequestError:
    pass

# A batch of files already uploaded.
extra = [tina.files.create(file=(f"extra{i}.txt", f"Extra note {i} about the water cycle and evaporation.".encode()), purpose="assistants").id for i in range(3)]
batch = tina.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=extra, poll_interval_ms=200)
assert batch.status == "completed" and batch.file_counts.completed == 3, batch
listed = [f.id for f in tina.vector_stores.files.list(vector_store_id=store.id, filter="completed")]
assert set(extra) <= set(listed) and len(listed) == 7, listed

# Search: each mode finds the right file; filters narrow.
for mode in ["hybrid", "dense", "lexical"]:
    r = ada.vector_stores.search(vector_store_id=store.id, query="What is the powerhouse of the cell?", extra_body={"search_mode": mode})
    assert r.data and r.data[0].filename == "mitochondria.html", (mode, [(d.filename, d.score) for d in r.data])
r = ada.vector_stores.search(vector_store_id=store.id, query="moon gravity",
                             filters={"type": "and", "filters": [{"type": "gte", "key": "week", "value": 3}, {"type": "eq", "key": "kind", "value": "docx"}]})
assert [d.filename for d in r.data] == ["tides.docx"], [d.filename for d in r.data]
assert r.data[0].attributes == {"week": 4, "kind": "docx"}, r.data[0].attributes
assert "gravity of the moon" in r.data[0].content[0].text
r = ada.vector_stores.search(vector_store_id=store.id, query="volcano magma", max_num_results=1)
assert len(r.data) == 1 and r.data[0].filename == "volcanoes.pdf", r.data
try:
    ada.vector_stores.search(vector_store_id=store.id, query="x", filters={"type": "like", "key": "week", "value": 1})
    raise SystemExit("an unknown filter was accepted")
except openai.BadRequestError as e:
    assert "like" in str(e), e

# Who sees what: a group member reads but cannot change; others see nothing.
assert ada.vector_stores.retrieve(store.id).id == store.id
assert store.id in [s.id for s in ada.vector_stores.list()]
try:
    ada.vector_stores.update(store.id, name="mine now")
    raise SystemExit("a reader renamed the store")
except openai.PermissionDeniedError:
    pass
for call in [lambda: bob.vector_stores.retrieve(store.id),
             lambda: bob.vector_stores.search(vector_store_id=store.id, query="cell"),
             lambda: bob.vector_stores.files.list(vector_store_id=store.id),
             lambda: bob.responses.create(model=chat, input="cell?", tools=[{"type": "file_search", "vector_store_ids": [store.id]}])]:
    try:
        call()
        raise SystemExit("bob reached the cs101 store")
    except openai.NotFoundError:
        pass
assert store.id not in [s.id for s in bob.vector_stores.list()]
try:
    bob.vector_stores.create(name="x", extra_body={"shared_with_groups": ["cs101"]})
    raise SystemExit("a student shared a store")
except openai.PermissionDeniedError:
    pass
mine = ada.vector_stores.create(name="ada's notes")
try:
    ada.vector_stores.files.create(vector_store_id=mine.id, file_id=extra[0])
    raise SystemExit("ada attached tina's file")
except openai.BadRequestError as e:
    # The same answer as for a file that does not exist.
    assert "no file" in str(e) and e.param == "file_id", (e, e.param)
try:
    bob.vector_stores.retrieve(mine.id)
    raise SystemExit("bob saw ada's store")
except openai.NotFoundError:
    pass

# Answers with citations, whole and streamed.
tools = [{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 3}]
resp = ada.responses.create(model=chat, input="What makes ATP in the cell?", tools=tools,
                            include=["file_search_call.results"], max_output_tokens=40, temperature=0)
kinds = [o.type for o in resp.output]
assert kinds == ["file_search_call", "message"], kinds
fs = resp.output[0]
assert fs.results and fs.results[0].filename == "mitochondria.html", fs
msg = resp.output[1]
cited = {a.filename for a in msg.content[0].annotations if a.type == "file_citation"}
# Which sources the model cites is its own text ([n] markers); that every
# citation names a source the search found is the gateway's.
assert cited and cited <= {r.filename for r in fs.results}, (msg, cited)
assert resp.output_text, resp
assert resp.usage.input_tokens > 40 and resp.usage.output_tokens > 0, resp.usage
events = []
final = None
for ev in ada.responses.create(model=chat, input="Why are there tides?", tools=tools, max_output_tokens=30, temperature=0, stream=True):
    events.append(ev.type)
    if ev.type in ("response.completed", "response.incomplete"):
        final = ev.response
# Cut by max_output_tokens, a response ends `incomplete`, as OpenAI's do.
assert events[0] == "response.created" and events[-1] in ("response.completed", "response.incomplete"), events
assert (events[-1] == "response.incomplete") == (final.status == "incomplete"), final.status
assert "response.output_text.delta" in events and "response.file_search_call.completed" in events, events
notes = final.output[-1].content[0].annotations
found = [o for o in final.output if o.type == "file_search_call"]
assert notes and found, final.output
if found[0].results:
    assert {a.filename for a in notes} <= {r.filename for r in found[0].results}, notes
# Structured output through text.format, with file_search.
schema = {"type": "object", "properties": {"organelle": {"type": "string", "maxLength": 30}},
          "required": ["organelle"], "additionalProperties": False}
r = ada.responses.create(model=chat, input="Which organelle makes ATP? Answer in JSON.", tools=tools, temperature=0,
                         max_output_tokens=60, text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}})
assert r.status == "completed", r
assert isinstance(json.loads(r.output_text)["organelle"], str), r.output_text
# Function tools: a required call, its output, then the answer; streamed too.
weather = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}
r = ada.responses.create(model=chat, input="What is the weather in Paris?", tools=[weather], tool_choice="required",
                         temperature=0, max_output_tokens=60)
calls = [o for o in r.output if o.type == "function_call"]
assert len(calls) == 1 and calls[0].name == "get_weather", r.output
assert isinstance(json.loads(calls[0].arguments)["city"], str), calls[0].arguments
r2 = ada.responses.create(model=chat, tools=[weather], temperature=0, max_output_tokens=30, input=[
    {"role": "user", "content": "What is the weather in Paris?"},
    {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
    {"type": "function_call_output", "call_id": calls[0].call_id, "output": "{\"sky\": \"sunny\", \"celsius\": 21}"}],
    tool_choice="none")
assert r2.output_text and not [o for o in r2.output if o.type == "function_call"], r2.output
events, final = [], None
for ev in ada.responses.create(model=chat, input="Weather in Oslo?", tools=[weather],
                               tool_choice={"type": "function", "name": "get_weather"}, temperature=0,
                               max_output_tokens=60, stream=True):
    events.append(ev.type)
    if ev.type == "response.completed":
        final = ev.response
assert "response.function_call_arguments.done" in events, events
assert [o.name for o in final.output if o.type == "function_call"] == ["get_weather"], final.output
try:
    ada.responses.create(model=chat, input="x", tools=[{"type": "web_search"}])
    raise SystemExit("web_search accepted")
except openai.BadRequestError as e:
    assert "web_search" in str(e)

# Detach and delete.
assert tina.vector_stores.files.delete(vector_store_id=store.id, file_id=ids["volcanoes.pdf"]).deleted
r = tina.vector_stores.search(vector_store_id=store.id, query="volcano magma", extra_body={"search_mode": "lexical"})
assert all(d.filename != "volcanoes.pdf" for d in r.data), r.data
tina.files.delete(ids["tides.docx"])
r = tina.vector_stores.search(vector_store_id=store.id, query="moon gravity tides", extra_body={"search_mode": "lexical"})
assert all(d.filename != "tides.docx" for d in r.data), r.data
assert tina.vector_stores.delete(store.id).deleted
try:
    ada.vector_stores.retrieve(store.id)
    raise SystemExit("a deleted store is still there")
except openai.NotFoundError:
    pass
print("RAG-CLIENT-OK")
