"""Aula's answers against OpenAI's published description (issue 31): every
endpoint Aula implements, called with the official `openai` client, each
raw JSON body and every streamed event validated against the schema OpenAI's
OpenAPI description gives it (tests/data/openai-schemas.json, its commit
named there).

    python conformance_client.py URL CHAT_MODEL EMBED_MODEL TEACHER_KEY \
        STUDENT_KEY SCHEMAS FINETUNE_FILE|-

Where OpenAI's live service is documented to differ from its description,
the check follows the service and says so (`SERVICE_DIFFERS`). Prints one
line per check, then CONFORMANCE-OK and the count; exits 1 on any failure,
listing every one.
"""
import io, json, sys, time

import jsonschema
import openai

url, chat_model, embed_model, teacher_key, student_key, schemas_path, ft_file = sys.argv[1:8]
doc = json.load(open(schemas_path))


def nullable(v):
    """The description still marks nullable fields with OpenAPI 3.0's
    `nullable: true`, which JSON Schema validators ignore: read it as
    allowing null."""
    if isinstance(v, list):
        return [nullable(x) for x in v]
    if not isinstance(v, dict):
        return v
    v = {k: nullable(x) for k, x in v.items()}
    if v.pop("nullable", False) is True:
        if isinstance(v.get("type"), str) and "$ref" not in v and not any(k in v for k in ("anyOf", "oneOf", "allOf")):
            v["type"] = [v["type"], "null"]
            if "enum" in v:
                v["enum"] = v["enum"] + [None]
        else:
            v = {"anyOf": [v, {"type": "null"}]}
    return v


doc["components"] = nullable(doc["components"])
# SERVICE_DIFFERS: the legacy completions stream sends `finish_reason: null`
# on every chunk but the last, as OpenAI's service does (its API reference's
# streaming example), where the description allows only the final values.
stream_completion = json.loads(json.dumps(doc["components"]["schemas"]["CreateCompletionResponse"]))
fr = stream_completion["properties"]["choices"]["items"]["properties"]["finish_reason"]
fr["type"], fr["enum"] = [fr["type"], "null"], fr["enum"] + [None]
doc["components"]["schemas"]["CompletionStreamChunk (service)"] = stream_completion
components = {"components": doc["components"]}
teacher = openai.OpenAI(base_url=url + "/v1", api_key=teacher_key, max_retries=0, timeout=300)
student = openai.OpenAI(base_url=url + "/v1", api_key=student_key, max_retries=0, timeout=300)

failures, checks = [], 0


def variant(schema, body):
    """A union of event schemas (ResponseStreamEvent): the member whose
    `type` is the event's, so that a failure names that member's reasons."""
    s = doc["components"]["schemas"][schema]
    for m in s.get("anyOf", s.get("oneOf", [])):
        name = m.get("$ref", "").rsplit("/", 1)[-1]
        t = doc["components"]["schemas"].get(name, {}).get("properties", {}).get("type", {})
        if body.get("type") in t.get("enum", []) or body.get("type") == t.get("const"):
            return name
    return schema


def check(what, schema, body):
    global checks
    checks += 1
    schema = variant(schema, body) if isinstance(body, dict) and "type" in body else schema
    ref = "#/components/schemas/" + schema.replace(" ", "%20")
    v = jsonschema.Draft202012Validator({"$ref": ref, **components})
    errors = sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        # anyOf/oneOf failures: the deepest reasons say what is wrong.
        def leaves(e):
            return [x for c in e.context for x in leaves(c)] if e.context else [e]
        reasons = sorted({f"{'/'.join(map(str, l.absolute_path))}: {l.message[:200]}"
                          for e in errors for l in leaves(e)})[:8]
        failures.append(f"{what} ({schema}):\n    " + "\n    ".join(reasons)
                        + f"\n    body: {json.dumps(body)[:600]}")
        print(f"FAIL {what}")
    else:
        print(f"ok   {what}")


def body_of(raw_call, *a, **kw):
    """The JSON body of a call made with the official client (its
    `with_raw_response` form)."""
    return raw_call(*a, **kw).http_response.json()


def events(streaming_call, **kw):
    """The JSON payloads of a streamed answer's `data:` lines (and their
    `event:` names, where the stream has them)."""
    out = []
    with streaming_call(**kw) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[len("data: "):]))
    return out


def error_body(f):
    try:
        f()
    except openai.APIStatusError as e:
        return e.status_code, e.response.json()
    raise AssertionError("the call did not fail")


say = [{"role": "user", "content": "Say hello."}]

# Chat completions: whole, streamed (with usage), json_schema, tools.
check("chat", "CreateChatCompletionResponse",
      body_of(student.chat.completions.with_raw_response.create, model=chat_model, messages=say, max_tokens=8))
chunks = events(student.chat.completions.with_streaming_response.create, model=chat_model, messages=say,
                max_tokens=8, stream=True, stream_options={"include_usage": True})
assert chunks, "no chunks"
for i, c in enumerate(chunks):
    check(f"chat stream chunk {i}", "CreateChatCompletionStreamResponse", c)
schema = {"type": "object", "properties": {"word": {"type": "string", "maxLength": 12}},
          "required": ["word"], "additionalProperties": False}
check("chat json_schema", "CreateChatCompletionResponse",
      body_of(student.chat.completions.with_raw_response.create, model=chat_model, messages=say, max_tokens=32,
              response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema, "strict": True}}))
tool = {"type": "function", "function": {"name": "greet", "description": "Greet someone.",
                                         "parameters": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}},
                                                        "required": ["name"], "additionalProperties": False}}}
check("chat tools", "CreateChatCompletionResponse",
      body_of(student.chat.completions.with_raw_response.create, model=chat_model, messages=say, max_tokens=48,
              tools=[tool], tool_choice={"type": "function", "function": {"name": "greet"}}))
for i, c in enumerate(events(student.chat.completions.with_streaming_response.create, model=chat_model, messages=say,
                             max_tokens=48, stream=True, tools=[tool],
                             tool_choice={"type": "function", "function": {"name": "greet"}})):
    check(f"chat tools stream chunk {i}", "CreateChatCompletionStreamResponse", c)

# Completions.
check("completion", "CreateCompletionResponse",
      body_of(student.completions.with_raw_response.create, model=chat_model, prompt="Once upon a time", max_tokens=8))
for i, c in enumerate(events(student.completions.with_streaming_response.create, model=chat_model,
                             prompt="Once upon a time", max_tokens=4, stream=True)):
    check(f"completion stream chunk {i}", "CompletionStreamChunk (service)", c)

# Embeddings: floats, token ids; base64 (SERVICE_DIFFERS: the service sends
# each embedding as a base64 string where the description has numbers; the
# official client asks for base64 by default and decodes it).
check("embeddings", "CreateEmbeddingResponse",
      body_of(student.embeddings.with_raw_response.create, model=embed_model, input=["a cat", "a dog"],
              encoding_format="float"))
check("embeddings of token ids", "CreateEmbeddingResponse",
      body_of(student.embeddings.with_raw_response.create, model=embed_model, input=[[64, 8415]],
              encoding_format="float"))
b64 = body_of(student.embeddings.with_raw_response.create, model=embed_model, input="a cat", encoding_format="base64")
assert isinstance(b64["data"][0]["embedding"], str), b64
b64["data"][0]["embedding"] = [0.0]
check("embeddings base64 (embedding as the service sends it: a string)", "CreateEmbeddingResponse", b64)

# Models and errors.
check("models", "ListModelsResponse", body_of(student.models.with_raw_response.list))
check("model", "Model", body_of(student.models.with_raw_response.retrieve, chat_model))
status, e = error_body(lambda: student.models.retrieve("no-such-model"))
check(f"error {status} (unknown model)", "ErrorResponse", e)
status, e = error_body(lambda: student.chat.completions.create(model=chat_model, messages=[], max_tokens=4))
check(f"error {status} (no messages)", "ErrorResponse", e)
status, e = error_body(lambda: student.chat.completions.create(model="no-such-model", messages=say))
check(f"error {status} (unknown model in a chat)", "ErrorResponse", e)

# Files.
notes = ("Mitochondria make ATP for the cell. " * 30).encode()
f = body_of(teacher.files.with_raw_response.create, file=("notes.txt", io.BytesIO(notes)), purpose="assistants")
check("file upload", "OpenAIFile", f)
check("file list", "ListFilesResponse", body_of(teacher.files.with_raw_response.list))
check("file retrieve", "OpenAIFile", body_of(teacher.files.with_raw_response.retrieve, f["id"]))
spare = body_of(teacher.files.with_raw_response.create, file=("spare.txt", io.BytesIO(b"spare text")),
                purpose="user_data")
check("file delete", "DeleteFileResponse", body_of(teacher.files.with_raw_response.delete, spare["id"]))

# Vector stores: the store, its files and a batch, a search, deletes.
vs = body_of(teacher.vector_stores.with_raw_response.create, name="notes")
check("vector store create", "VectorStoreObject", vs)
check("vector store list", "ListVectorStoresResponse", body_of(teacher.vector_stores.with_raw_response.list))
vf = body_of(teacher.vector_stores.files.with_raw_response.create, vector_store_id=vs["id"], file_id=f["id"])
check("vector store file attach", "VectorStoreFileObject", vf)
for _ in range(600):
    s = body_of(teacher.vector_stores.with_raw_response.retrieve, vs["id"])
    if s["file_counts"]["in_progress"] == 0:
        break
    time.sleep(0.5)
check("vector store retrieve", "VectorStoreObject", s)
assert s["file_counts"]["completed"] == 1, s
check("vector store file retrieve", "VectorStoreFileObject",
      body_of(teacher.vector_stores.files.with_raw_response.retrieve, vector_store_id=vs["id"], file_id=f["id"]))
check("vector store files", "ListVectorStoreFilesResponse",
      body_of(teacher.vector_stores.files.with_raw_response.list, vector_store_id=vs["id"]))
other = body_of(teacher.files.with_raw_response.create, file=("tides.txt", io.BytesIO(b"Tides follow the moon. " * 20)),
                purpose="assistants")
batch = body_of(teacher.vector_stores.file_batches.with_raw_response.create, vector_store_id=vs["id"],
                file_ids=[other["id"]])
check("vector store file batch", "VectorStoreFileBatchObject", batch)
check("vector store file batch retrieve", "VectorStoreFileBatchObject",
      body_of(teacher.vector_stores.file_batches.with_raw_response.retrieve, vector_store_id=vs["id"],
              batch_id=batch["id"]))
check("vector store file batch files", "ListVectorStoreFilesResponse",
      body_of(teacher.vector_stores.file_batches.with_raw_response.list_files, vector_store_id=vs["id"],
              batch_id=batch["id"]))
check("vector store search", "VectorStoreSearchResultsPage",
      body_of(teacher.vector_stores.with_raw_response.search, vector_store_id=vs["id"], query="What makes ATP?"))

# Responses: whole, streamed, with file_search, a function tool, json_schema.
check("response", "Response",
      body_of(teacher.responses.with_raw_response.create, model=chat_model, input="Say hello.", max_output_tokens=16))
evs = events(teacher.responses.with_streaming_response.create, model=chat_model, input="Say hello.",
             max_output_tokens=16, stream=True)
assert evs, "no events"
for i, ev in enumerate(evs):
    check(f"response stream event {i} ({ev.get('type')})", "ResponseStreamEvent", ev)
check("response with file_search", "Response",
      body_of(teacher.responses.with_raw_response.create, model=chat_model, input="What makes ATP?",
              max_output_tokens=16, tools=[{"type": "file_search", "vector_store_ids": [vs["id"]]}]))
evs = events(teacher.responses.with_streaming_response.create, model=chat_model, input="What makes ATP?",
             max_output_tokens=16, stream=True, tools=[{"type": "file_search", "vector_store_ids": [vs["id"]]}])
for i, ev in enumerate(evs):
    check(f"response file_search stream event {i} ({ev.get('type')})", "ResponseStreamEvent", ev)
check("response with a function tool", "Response",
      body_of(teacher.responses.with_raw_response.create, model=chat_model, input="Greet Ann.", max_output_tokens=48,
              tools=[{"type": "function", "name": "greet", "description": "Greet someone.", "strict": True,
                      "parameters": tool["function"]["parameters"]}],
              tool_choice={"type": "function", "name": "greet"}))
check("response with json_schema", "Response",
      body_of(teacher.responses.with_raw_response.create, model=chat_model, input="One word.", max_output_tokens=32,
              text={"format": {"type": "json_schema", "name": "w", "schema": schema, "strict": True}}))

check("vector store file delete", "DeleteVectorStoreFileResponse",
      body_of(teacher.vector_stores.files.with_raw_response.delete, vector_store_id=vs["id"], file_id=other["id"]))
check("vector store delete", "DeleteVectorStoreResponse", body_of(teacher.vector_stores.with_raw_response.delete, vs["id"]))

# Fine-tuning: create, list, events, checkpoints, cancel.
if ft_file != "-":
    tf = body_of(student.files.with_raw_response.create, file=("mascot.jsonl", open(ft_file, "rb")), purpose="fine-tune")
    check("fine-tune file upload", "OpenAIFile", tf)
    job = body_of(student.fine_tuning.jobs.with_raw_response.create, model=chat_model, training_file=tf["id"],
                  hyperparameters={"n_epochs": 1})
    check("fine-tuning job create", "FineTuningJob", job)
    check("fine-tuning job list", "ListPaginatedFineTuningJobsResponse",
          body_of(student.fine_tuning.jobs.with_raw_response.list))
    check("fine-tuning job retrieve", "FineTuningJob",
          body_of(student.fine_tuning.jobs.with_raw_response.retrieve, job["id"]))
    check("fine-tuning job cancel", "FineTuningJob", body_of(student.fine_tuning.jobs.with_raw_response.cancel, job["id"]))
    check("fine-tuning job events", "ListFineTuningJobEventsResponse",
          body_of(student.fine_tuning.jobs.with_raw_response.list_events, job["id"]))
    check("fine-tuning job checkpoints", "ListFineTuningJobCheckpointsResponse",
          body_of(student.fine_tuning.jobs.checkpoints.with_raw_response.list, job["id"]))
else:
    print("skip fine-tuning (no trainer)")

if failures:
    print(f"\n{len(failures)} of {checks} checks failed:\n" + "\n".join(failures))
    sys.exit(1)
print(f"CONFORMANCE-OK {checks}")
