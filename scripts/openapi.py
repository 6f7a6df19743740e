"""Aula's OpenAPI 3.1 description, as data: prints the JSON that
crates/aula-gateway/src/openapi.json holds (served at /openapi.json).

    python3 scripts/openapi.py > crates/aula-gateway/src/openapi.json

Aula parses request bodies by hand (for OpenAI's exact error shapes), so the
wire shapes are written here; scripts/test.sh checks the JSON is this
script's output, a unit test checks it names exactly the gateway's routes,
and scripts/fuzz-api.sh (schemathesis, in CI) checks the gateway against it.
"""
import json
E = {"$ref": "#/components/schemas/Error"}
def err(desc): return {"description": desc, "content": {"application/json": {"schema": E}}}
ERRS = {
 "400": err("The request is malformed or asks for something not supported (`error.param` names the field)."),
 "401": err("No valid credentials (the same answer whatever was wrong)."),
 "403": err("Not allowed for this user, or a quota is spent (`error.code`, `error.resets_at`)."),
 "404": err("No such model (or one this user may not use)."),
 "408": err("The request body did not arrive in time."),
 "413": err("The request body is larger than 2 MiB."),
 "429": {**err("A rate or concurrency limit, or a full queue: retry after `Retry-After` seconds."),
         "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}},
 "502": err("The engine answered with something invalid, or died."),
 "503": err("Overloaded, or the engine (or the user database, or JupyterHub) is not available right now."),
 "504": err("The engine took longer than allowed to answer."),
}
def errs(*codes): return {c: ERRS[c] for c in codes}
AUTH_ERRS = ("401", "403", "503")
GEN_ERRS = ("400", "401", "403", "404", "408", "413", "429", "502", "503", "504")

nonneg = {"type": "integer", "minimum": 1, "maximum": 4294967295}
common_props = {
 "model": {"type": "string", "minLength": 1, "description": "A model name from `GET /v1/models`."},
 "max_tokens": {**nonneg, "description": "Most tokens to generate (at most the user's ceiling)."},
 "temperature": {"type": "number", "minimum": 0, "maximum": 2},
 "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
 "top_k": {"type": "integer", "minimum": 0, "maximum": 4294967295},
 "seed": {"type": "integer"},
 "stop": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 256},
                     {"type": "array", "maxItems": 4, "items": {"type": "string", "minLength": 1, "maxLength": 256}}]},
 "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
 "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
 "stream": {"type": "boolean"},
 "stream_options": {"type": "object", "additionalProperties": False, "properties": {"include_usage": {"type": "boolean"}},
   "description": "Only with `stream: true`."},
 "n": {"type": "integer", "const": 1, "description": "Only one choice per request."},
 "user": {"type": "string"},
 "logit_bias": {"type": "object", "maxProperties": 0, "description": "Not supported: only an empty object."},
 "logprobs": {"type": "boolean", "const": False, "description": "Not supported."},
}
text_content = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object",
      "required": ["type", "text"], "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}]}
# One schema per kind of turn, as the parser takes them.
message = {"anyOf": [
  {"type": "object", "required": ["role", "content"], "additionalProperties": False, "properties": {
     "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
     "content": text_content, "name": {"type": "string"}}},
  {"type": "object", "required": ["role", "tool_calls"], "properties": {
     "role": {"const": "assistant"}, "content": {"type": ["string", "null"]}, "name": {"type": "string"},
     "tool_calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCallIn"}}}},
  {"type": "object", "required": ["role", "content"], "properties": {
     "role": {"const": "tool"}, "content": text_content, "tool_call_id": {"type": "string"}}}]}
response_format = {"oneOf": [
  {"type": "object", "required": ["type"], "properties": {"type": {"const": "text"}}},
  {"type": "object", "required": ["type"], "properties": {"type": {"const": "json_object"}}},
  {"type": "object", "required": ["type", "json_schema"], "properties": {"type": {"const": "json_schema"},
     "json_schema": {"type": "object", "properties": {
        "name": {"type": ["string", "null"], "minLength": 1, "description": "Default: `response`."},
        "schema": {"type": ["object", "null"], "description": "A JSON Schema (at most 64 KiB; repetition bounds at most 1024). Default: any JSON."},
        "strict": {"type": ["boolean", "null"]}, "description": {}}}}}]}
tool = {"type": "object", "required": ["type", "function"], "properties": {"type": {"const": "function"},
  "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
     "description": {"type": "string"}, "parameters": {"type": "object"}, "strict": {"type": "boolean"}}}}}
chat_req = {"type": "object", "required": ["model", "messages"], "additionalProperties": False,
 "if": {"required": ["stream_options"], "properties": {"stream_options": {"type": "object"}}},
 "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
 "properties": {**common_props,
  "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}},
  "max_completion_tokens": nonneg,
  "metadata": {"type": "object"},
  "store": {"type": "boolean", "const": False},
  "response_format": {"$ref": "#/components/schemas/ResponseFormat"},
  "tools": {"type": "array", "items": {"$ref": "#/components/schemas/Tool"}},
  "tool_choice": {"oneOf": [{"type": "string", "enum": ["none", "auto", "required"]},
      {"type": "object", "required": ["type", "function"], "properties": {"type": {"const": "function"},
        "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}]},
  "parallel_tool_calls": {"type": "boolean"},
  "service_tier": {"type": "string"}}}
comp_req = {"type": "object", "required": ["model", "prompt"], "additionalProperties": False,
 "if": {"required": ["stream_options"], "properties": {"stream_options": {"type": "object"}}},
 "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
 "properties": {**common_props,
  "prompt": {"oneOf": [{"type": "string", "minLength": 1},
                       {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string", "minLength": 1}}]},
  "echo": {"type": "boolean", "const": False},
  "best_of": {"type": "integer", "const": 1},
  "response_format": {"$ref": "#/components/schemas/ResponseFormat"}}}
usage = {"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {
  "prompt_tokens": {"type": "integer", "minimum": 0}, "completion_tokens": {"type": "integer", "minimum": 0},
  "total_tokens": {"type": "integer", "minimum": 0}}}
tool_call = {"type": "object", "required": ["id", "type", "function"], "properties": {"id": {"type": "string"},
  "type": {"const": "function"}, "function": {"type": "object", "required": ["name", "arguments"],
  "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}}}}
# An earlier call in the history, as the parser takes it.
tool_call_in = {"type": "object", "required": ["function"], "properties": {"id": {"type": "string"},
  "type": {"const": "function"}, "function": {"type": "object", "required": ["name"],
  "properties": {"name": {"type": "string"}, "arguments": {}}}}}
finish = {"type": ["string", "null"], "enum": ["stop", "length", "tool_calls", "content_filter", None]}
chat_resp = {"type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": {
  "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
  "model": {"type": "string"}, "system_fingerprint": {"type": ["string", "null"]},
  "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message", "finish_reason"], "properties": {
     "index": {"type": "integer"}, "finish_reason": finish,
     "message": {"type": "object", "required": ["role"], "properties": {"role": {"const": "assistant"},
        "content": {"type": ["string", "null"]}, "refusal": {"type": ["string", "null"]},
        "tool_calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}}}}}}},
  "usage": {"$ref": "#/components/schemas/Usage"}}}
comp_resp = {"type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": {
  "id": {"type": "string"}, "object": {"const": "text_completion"}, "created": {"type": "integer"},
  "model": {"type": "string"},
  "choices": {"type": "array", "items": {"type": "object", "required": ["index", "text", "finish_reason"], "properties": {
     "index": {"type": "integer"}, "text": {"type": "string"}, "finish_reason": finish}}},
  "usage": {"$ref": "#/components/schemas/Usage"}}}
emb_req = {"type": "object", "required": ["model", "input"], "additionalProperties": False, "properties": {
  "model": common_props["model"],
  "input": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "string", "minLength": 1}},
      {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 4294967295}},
      {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 4294967295}}}]},
  "encoding_format": {"type": "string", "enum": ["float", "base64"]},
  "dimensions": {"type": "integer", "minimum": 1},
  "user": {"type": "string"},
  "truncate_prompt_tokens": {"oneOf": [{"const": -1}, {"type": "integer", "minimum": 1}],
     "description": "Cut each input to this many tokens (-1: the model's limit) instead of refusing longer ones."}}}
emb_resp = {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
  "object": {"const": "list"}, "model": {"type": "string"},
  "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
     "object": {"const": "embedding"}, "index": {"type": "integer"},
     "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "contentEncoding": "base64"}]}}}},
  "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {
     "prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}}
model_list = {"type": "object", "required": ["object", "data"], "properties": {"object": {"const": "list"},
  "data": {"type": "array", "items": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
    "id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"}, "owned_by": {"type": "string"}}}}}}
error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
  "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]},
  "retry_after_seconds": {"type": "integer"}, "resets_at": {"type": "integer"}}}}}
MODEL_STATES = ["ready", "loading", "unloaded", "failed", "unreachable"]
ps_row = {"type": "object", "required": ["model", "state", "engine", "slots", "busy", "queued"], "properties": {
  "model": {"type": "string"},
  "state": {"enum": MODEL_STATES},
  "reason": {"type": "string", "description": "Why the last start failed (state `failed`)."},
  "engine": {"enum": ["embedded", "llama-server", "vllm", "sglang", "url"]},
  "pinned": {"type": "boolean"}, "keep_alive_s": {"type": ["integer", "null"]},
  "planned_bytes": {"type": ["integer", "null"]}, "actual_bytes": {"type": ["integer", "null"]},
  "slots": {"type": "integer"}, "busy": {"type": "integer"}, "queued": {"type": "integer"},
  "active_requests": {"type": "integer"}, "idle_s": {"type": ["number", "null"]},
  "load_time_s": {"type": ["number", "null"]},
  "device_bytes": {"type": "object", "additionalProperties": {"type": "integer"},
                   "description": "Bytes per llama.cpp buffer type (CUDA0, Vulkan0, CUDA_Host, CPU, CPU_Mapped, CPU_REPACK, AMX) of embedded engines."},
  "layers_offloaded": {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 2, "maxItems": 2,
                       "description": "Layers offloaded to a GPU and all layers, as llama.cpp reported."}}}
ps = {"type": "object", "required": ["budget_bytes", "models", "requests_in_flight", "reserved_tokens"], "properties": {"budget_bytes": {"type": "integer"},
  "requests_in_flight": {"type": "integer", "minimum": 0, "description": "Admitted requests not yet finished (all models)."},
  "reserved_tokens": {"type": "integer", "minimum": 0, "description": "Tokens those requests hold reserved against quotas."},
  "models": {"type": "array", "items": {"$ref": "#/components/schemas/PsRow"}},
  "holds": {"type": "array", "description": "Memory held outside the engines (fine-tuning trainers).", "items": {"type": "object",
     "required": ["what", "bytes"], "properties": {"what": {"type": "string"}, "bytes": {"type": "integer", "minimum": 0}}}},
  "fine_tuning": {"type": "array", "description": "Fine-tuning jobs waiting or training, oldest first.", "items": {"type": "object",
     "required": ["id", "user", "model", "status", "planned_bytes"], "properties": {"id": {"type": "string"}, "user": {"type": "string"},
     "model": {"type": "string"}, "status": {"enum": ["validating_files", "queued", "running"]}, "planned_bytes": {"type": "integer", "minimum": 0}}}}}}
readyz = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"},
  "models": {"type": "object", "additionalProperties": {"type": "object", "properties": {
     "ready": {"type": "boolean"}, "loaded": {"type": "boolean"}, "slots": {"type": "integer"},
     "busy": {"type": "integer"}, "queued": {"type": "integer"}}}}}}

file_obj = {"type": "object", "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"], "properties": {
  "id": {"type": "string"}, "object": {"const": "file"}, "bytes": {"type": "integer", "minimum": 1},
  "created_at": {"type": "integer"}, "filename": {"type": "string"},
  "purpose": {"enum": ["assistants", "user_data", "fine-tune"]}, "status": {"const": "processed"}}}
file_list = {"type": "object", "required": ["object", "data", "has_more"], "properties": {"object": {"const": "list"},
  "data": {"type": "array", "items": {"$ref": "#/components/schemas/File"}}, "has_more": {"type": "boolean"},
  "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]}}}
file_upload = {"type": "object", "required": ["file", "purpose"], "properties": {
  "file": {"type": "string", "format": "binary", "description": "The file; at most the user's `max_file_mb`."},
  "purpose": {"enum": ["assistants", "user_data", "fine-tune"], "description": "A `fine-tune` file must be JSON Lines of chat examples; a bad one is refused, naming the line."}}}
file_deleted = {"type": "object", "required": ["id", "object", "deleted"], "properties": {
  "id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"const": True}}}
file_param = [{"name": "file_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
FILE_ERRS = ("400", "401", "403", "404", "503")
ERRS["413f"] = err("The file is larger than the user's `max_file_mb`.")
ERRS["429f"] = {**ERRS["429"], "description": "The upload would take the user's files past `file_storage_mb` (`error.code`: `storage_quota`), or the user has 4 uploads under way already (`upload_concurrency`)."}

# Vector stores and /v1/responses (retrieval over course material).
counts = {"type": "object", "required": ["in_progress", "completed", "failed", "cancelled", "total"],
  "properties": {k: {"type": "integer", "minimum": 0} for k in ["in_progress", "completed", "failed", "cancelled", "total"]}}
strategy_in = {"anyOf": [
  {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {"type": {"const": "auto"}}},
  {"type": "object", "required": ["type", "static"], "additionalProperties": False, "properties": {"type": {"const": "static"},
     "static": {"type": "object", "required": ["max_chunk_size_tokens", "chunk_overlap_tokens"], "properties": {
       "max_chunk_size_tokens": {"type": "integer", "minimum": 100, "maximum": 4096},
       "chunk_overlap_tokens": {"type": "integer", "minimum": 0}}}}},
  {"type": "null"}], "description": "`auto`: 256 tokens with 64 shared; sizes are the embedding model's tokens, clamped to what it embeds."}
metadata = {"anyOf": [{"type": "object", "maxProperties": 16, "additionalProperties": {"type": "string", "maxLength": 512}}, {"type": "null"}]}
attributes = {"anyOf": [{"type": "object", "maxProperties": 16, "additionalProperties": {"anyOf": [
  {"type": "string", "maxLength": 512}, {"type": "number"}, {"type": "boolean"}]}}, {"type": "null"}]}
groups = {"anyOf": [{"type": "array", "maxItems": 64, "items": {"type": "string", "minLength": 1, "maxLength": 64}}, {"type": "null"}],
  "description": "Aula's own: groups whose members may read (not change) the store. Teachers and admins only."}
file_ids = {"anyOf": [{"type": "array", "maxItems": 500, "items": {"type": "string"}}, {"type": "null"}]}
vs_obj = {"type": "object", "required": ["id", "object", "created_at", "name", "usage_bytes", "file_counts", "status", "metadata"], "properties": {
  "id": {"type": "string"}, "object": {"const": "vector_store"}, "created_at": {"type": "integer"}, "name": {"type": "string"},
  "description": {"type": ["string", "null"]}, "usage_bytes": {"type": "integer"}, "file_counts": counts,
  "status": {"enum": ["in_progress", "completed"]}, "expires_at": {"type": "null"},
  "last_active_at": {"type": "integer"}, "metadata": {"type": "object"}, "owner": {"type": "string"},
  "shared_with_groups": {"type": "array", "items": {"type": "string"}}}}
vs_create = {"type": "object", "additionalProperties": False, "properties": {
  "name": {"anyOf": [{"type": "string", "maxLength": 256}, {"type": "null"}]},
  "description": {"anyOf": [{"type": "string", "maxLength": 512}, {"type": "null"}]},
  "metadata": metadata, "chunking_strategy": strategy_in, "file_ids": file_ids, "shared_with_groups": groups,
  "expires_after": {"type": "null", "description": "Not supported: stores do not expire."}}}
vs_modify = {"type": "object", "additionalProperties": False, "properties": {
  "name": {"anyOf": [{"type": "string", "maxLength": 256}, {"type": "null"}]}, "metadata": metadata,
  "shared_with_groups": groups, "expires_after": {"type": "null", "description": "Not supported."}}}
vsf_obj = {"type": "object", "required": ["id", "object", "created_at", "vector_store_id", "status", "usage_bytes"], "properties": {
  "id": {"type": "string"}, "object": {"const": "vector_store.file"}, "created_at": {"type": "integer"},
  "vector_store_id": {"type": "string"}, "status": {"enum": ["in_progress", "completed", "failed", "cancelled"]},
  "usage_bytes": {"type": "integer"},
  "last_error": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["code", "message"], "properties": {
     "code": {"enum": ["server_error", "unsupported_file", "invalid_file"]}, "message": {"type": ["string", "null"]}}}]},
  "attributes": {"type": "object"}, "chunking_strategy": {"type": "object"}}}
vsf_create = {"type": "object", "required": ["file_id"], "additionalProperties": False, "properties": {
  "file_id": {"type": "string", "maxLength": 128}, "attributes": attributes, "chunking_strategy": strategy_in}}
vsf_update = {"type": "object", "additionalProperties": False, "properties": {"attributes": attributes}}
batch_obj = {"type": "object", "required": ["id", "object", "created_at", "vector_store_id", "status", "file_counts"], "properties": {
  "id": {"type": "string"}, "object": {"const": "vector_store.files_batch"}, "created_at": {"type": "integer"},
  "vector_store_id": {"type": "string"}, "status": {"enum": ["in_progress", "completed", "failed", "cancelled"]}, "file_counts": counts}}
batch_create = {"type": "object", "additionalProperties": False, "properties": {
  "file_ids": file_ids, "attributes": attributes, "chunking_strategy": strategy_in,
  "files": {"anyOf": [{"type": "array", "maxItems": 500, "items": vsf_create}, {"type": "null"}]}},
  "description": "`file_ids` or `files` (each with its own attributes)."}
def listing(ref): return {"type": "object", "required": ["object", "data", "has_more"], "properties": {"object": {"const": "list"},
  "data": {"type": "array", "items": {"$ref": ref}}, "has_more": {"type": "boolean"},
  "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]}}}
filt = {"type": "object", "description": "A comparison `{type: eq|ne|gt|gte|lt|lte|in|nin, key, value}` or a compound `{type: and|or, filters}`."}
ranking = {"anyOf": [{"type": "object", "additionalProperties": False, "properties": {
  "ranker": {"enum": ["auto", "none", "default-2024-11-15"]}, "score_threshold": {"type": "number", "minimum": 0, "maximum": 1}}}, {"type": "null"}]}
search_req = {"type": "object", "required": ["query"], "additionalProperties": False, "properties": {
  "query": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "maxItems": 10, "items": {"type": "string", "minLength": 1}}]},
  "filters": {"anyOf": [filt, {"type": "null"}]}, "max_num_results": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 50}, {"type": "null"}]},
  "ranking_options": ranking, "rewrite_query": {"anyOf": [{"const": False}, {"type": "null"}]},
  "search_mode": {"anyOf": [{"enum": ["hybrid", "dense", "lexical"]}, {"type": "null"}], "description": "Aula's own: hybrid (default), dense or lexical."}}}
search_page = {"type": "object", "required": ["object", "search_query", "data", "has_more"], "properties": {
  "object": {"const": "vector_store.search_results.page"}, "search_query": {"type": "array", "items": {"type": "string"}},
  "has_more": {"const": False}, "next_page": {"type": "null"},
  "data": {"type": "array", "items": {"type": "object", "required": ["file_id", "filename", "score", "content"], "properties": {
    "file_id": {"type": "string"}, "filename": {"type": "string"}, "score": {"type": "number"}, "attributes": {"type": "object"},
    "content": {"type": "array", "items": {"type": "object", "required": ["type", "text"], "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}}}}}}
def deleted(obj): return {"type": "object", "required": ["id", "object", "deleted"], "properties": {
  "id": {"type": "string"}, "object": {"const": obj}, "deleted": {"type": "boolean"}}}
resp_req = {"type": "object", "required": ["model", "input"], "additionalProperties": False, "properties": {
  "model": {"type": "string", "minLength": 1},
  "input": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "items": {"anyOf": [
     {"type": "object", "required": ["role", "content"], "properties": {
       "type": {"const": "message"}, "role": {"enum": ["user", "assistant", "system", "developer"]},
       "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object", "required": ["type", "text"], "properties": {
          "type": {"enum": ["input_text", "output_text", "text"]}, "text": {"type": "string"}}}}]}}},
     {"type": "object", "required": ["type", "call_id", "name", "arguments"], "properties": {"type": {"const": "function_call"},
       "call_id": {"type": "string"}, "name": {"type": "string"}, "arguments": {"type": "string"}}},
     {"type": "object", "required": ["type", "call_id", "output"], "properties": {"type": {"const": "function_call_output"},
       "call_id": {"type": "string"}, "output": {"type": "string"}}}]}}]},
  "instructions": {"type": ["string", "null"]}, "max_output_tokens": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 4294967295}, {"type": "null"}]},
  "temperature": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 2}, {"type": "null"}]},
  "top_p": {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1}, {"type": "null"}]},
  "stream": {"type": ["boolean", "null"]}, "store": {"type": ["boolean", "null"]}, "parallel_tool_calls": {"type": ["boolean", "null"]},
  "truncation": {"anyOf": [{"const": "disabled"}, {"type": "null"}]}, "user": {"type": "string"}, "metadata": metadata,
  "text": {"anyOf": [{"type": "object", "additionalProperties": False, "properties": {"format": {"anyOf": [
     {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {"type": {"enum": ["text", "json_object"]}}},
     {"type": "object", "required": ["type", "name", "schema"], "additionalProperties": False, "properties": {"type": {"const": "json_schema"},
        "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}, "description": {"type": "string"},
        "schema": {"type": "object", "description": "A JSON Schema the output must match."}, "strict": {"type": ["boolean", "null"]}}},
     {"type": "null"}]}}}, {"type": "null"}], "description": "`text.format`: the chat API's `response_format`, as the Responses API writes it."},
  "include": {"anyOf": [{"type": "array", "items": {"const": "file_search_call.results"}}, {"type": "null"}]},
  "tool_choice": {"anyOf": [{"enum": ["auto", "none"]}, {"type": "null"}], "description": "Also `required`, {\"type\": \"file_search\"} or {\"type\": \"function\", \"name\": ...} with such a tool."},
  "tools": {"anyOf": [{"type": "array", "items": {"anyOf": [
     {"type": "object", "required": ["type", "vector_store_ids"], "additionalProperties": False, "properties": {
       "type": {"const": "file_search"}, "vector_store_ids": {"type": "array", "minItems": 1, "maxItems": 16, "items": {"type": "string"}},
       "max_num_results": {"type": "integer", "minimum": 1, "maximum": 50}, "filters": filt, "ranking_options": ranking}},
     {"type": "object", "required": ["type", "name"], "additionalProperties": False, "properties": {
       "type": {"const": "function"}, "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
       "description": {"type": ["string", "null"]}, "parameters": {"type": "object"}, "strict": {"type": ["boolean", "null"]}}}]},
     "description": "At most one file_search tool; function tools as in the chat API."}, {"type": "null"}]}}}
hyper = {"anyOf": [{"type": "object", "additionalProperties": False, "properties": {
  "n_epochs": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": 50}]},
  "batch_size": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": 256}]},
  "learning_rate_multiplier": {"anyOf": [{"const": "auto"}, {"type": "number", "exclusiveMinimum": 0, "maximum": 10}]}}}, {"type": "null"}]}
ft_create = {"type": "object", "required": ["model", "training_file"], "additionalProperties": False, "properties": {
  "model": {"type": "string", "minLength": 1, "description": "A chat model Aula serves from a GGUF with its own engine."},
  "training_file": {"type": "string", "minLength": 1, "description": "One of the caller's files with purpose `fine-tune`."},
  "validation_file": {"type": ["string", "null"]},
  "suffix": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}, {"type": "null"}]},
  "seed": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2147483647}, {"type": "null"}]},
  "hyperparameters": hyper,
  "method": {"anyOf": [{"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
     "type": {"const": "supervised"}, "supervised": {"anyOf": [{"type": "object", "additionalProperties": False,
        "properties": {"hyperparameters": hyper}}, {"type": "null"}]}}}, {"type": "null"}]},
  "integrations": {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]},
  "lora": {"anyOf": [{"type": "object", "additionalProperties": False, "properties": {
     "rank": {"type": "integer", "minimum": 1, "maximum": 256}, "alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 4096},
     "qlora": {"type": "boolean"}}}, {"type": "null"}], "description": "Aula's own: LoRA rank (default 8), alpha (default 2 x rank) and qlora (4-bit NF4 base; on a CUDA GPU with bf16 only)."},
  "shared_with_groups": {"anyOf": [{"type": "array", "maxItems": 64, "items": {"type": "string", "minLength": 1, "maxLength": 64}}, {"type": "null"}],
     "description": "Aula's own: groups that may use the resulting model (teachers and admins)."}}}
ft_job = {"type": "object", "required": ["id", "object", "created_at", "model", "status", "training_file", "hyperparameters", "result_files", "seed"], "properties": {
  "id": {"type": "string"}, "object": {"const": "fine_tuning.job"}, "created_at": {"type": "integer"},
  "finished_at": {"type": ["integer", "null"]}, "model": {"type": "string"}, "fine_tuned_model": {"type": ["string", "null"]},
  "status": {"enum": ["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]},
  "training_file": {"type": ["string", "null"]}, "validation_file": {"type": ["string", "null"]},
  "hyperparameters": {"type": ["object", "null"]}, "result_files": {"type": "array"}, "seed": {"type": ["integer", "null"]},
  "trained_tokens": {"type": ["integer", "null"]}, "estimated_finish": {"type": ["integer", "null"]},
  "error": {"type": ["object", "null"]}, "aula": {"type": "object"}}}
ft_event = {"type": "object", "required": ["id", "object", "created_at", "level", "message", "type"], "properties": {
  "id": {"type": "string"}, "object": {"const": "fine_tuning.job.event"}, "created_at": {"type": "integer"},
  "level": {"enum": ["info", "warn", "error"]}, "message": {"type": "string"}, "type": {"enum": ["message", "metrics"]},
  "data": {"type": ["object", "null"], "description": "For `metrics`: step, total_steps, epoch, train_loss, learning_rate, tokens_per_s."}}}
ft_ckpt = {"type": "object", "required": ["id", "object", "created_at", "fine_tuning_job_id", "step_number", "metrics"], "properties": {
  "id": {"type": "string"}, "object": {"const": "fine_tuning.job.checkpoint"}, "created_at": {"type": "integer"},
  "fine_tuning_job_id": {"type": "string"}, "fine_tuned_model_checkpoint": {"type": "string"},
  "step_number": {"type": "integer"}, "metrics": {"type": ["object", "null"]}}}
resp_obj = {"type": "object", "required": ["id", "object", "created_at", "status", "model", "output"], "properties": {
  "id": {"type": "string"}, "object": {"const": "response"}, "created_at": {"type": "integer"},
  "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]}, "model": {"type": "string"},
  "output": {"type": "array", "items": {"type": "object", "required": ["id", "type"], "properties": {
     "type": {"enum": ["message", "file_search_call", "function_call"]}}}},
  "usage": {"type": ["object", "null"]}}}

# The parser takes an optional field sent as null as absent: say so.
REQUIRED = {"model", "messages", "prompt", "input"}
for schema in (chat_req, comp_req, emb_req):
    for k, v in list(schema["properties"].items()):
        if k not in REQUIRED:
            schema["properties"][k] = {"anyOf": [v, {"type": "null"}]}

def json_body(ref): return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}
def ok(ref, desc, sse=False):
    c = {"application/json": {"schema": {"$ref": ref}}}
    if sse:
        c["text/event-stream"] = {"schema": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}},
            "description": "With `stream: true`: one event per chunk (`data: {chunk JSON}`), then `data: [DONE]`."}
    return {"description": desc, "content": c}
SEC = [{"bearer": []}, {}]
VS = [{"name": "vector_store_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
BATCH = [{"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
  {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
  {"name": "after", "in": "query", "schema": {"type": "string"}}, {"name": "before", "in": "query", "schema": {"type": "string"}}]
FILTER = {"name": "filter", "in": "query", "schema": {"enum": ["in_progress", "completed", "failed", "cancelled"]}}
VS_ERRS = ("400", "401", "403", "404", "408", "413", "429", "503")
FT = [{"name": "fine_tuning_job_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
FT_PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
  {"name": "after", "in": "query", "schema": {"type": "string"}}]
FT_ERRS = ("400", "401", "403", "404", "408", "413", "429", "503")
model_param = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
doc = {
 "openapi": "3.1.0",
 "info": {"title": "Aula", "version": "0.1.0",
   "description": "Aula's HTTP API: the OpenAI API a class's clients speak (`/v1`), the admin API (`/admin`), health and metrics. Authentication: `Authorization: Bearer KEY` with an Aula API key or a JupyterHub token; with no users and no Hub (loopback), no key is needed for `/v1`."},
 "servers": [{"url": "http://127.0.0.1:8080"}],
 "components": {
   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
   "schemas": {"Error": error, "ChatMessage": message, "ToolCall": tool_call, "ToolCallIn": tool_call_in, "Tool": tool,
     "ResponseFormat": response_format, "Usage": usage,
     "ChatCompletionRequest": chat_req, "ChatCompletion": chat_resp,
     "CompletionRequest": comp_req, "Completion": comp_resp,
     "EmbeddingRequest": emb_req, "EmbeddingList": emb_resp, "ModelList": model_list,
     "PsRow": ps_row, "Ps": ps, "Ready": readyz,
     "File": file_obj, "FileList": file_list, "FileUpload": file_upload, "FileDeleted": file_deleted,
     "VectorStore": vs_obj, "VectorStoreList": listing("#/components/schemas/VectorStore"),
     "VectorStoreCreate": vs_create, "VectorStoreModify": vs_modify, "VectorStoreDeleted": deleted("vector_store.deleted"),
     "VectorStoreFile": vsf_obj, "VectorStoreFileList": listing("#/components/schemas/VectorStoreFile"),
     "VectorStoreFileCreate": vsf_create, "VectorStoreFileUpdate": vsf_update, "VectorStoreFileDeleted": deleted("vector_store.file.deleted"),
     "FileBatch": batch_obj, "FileBatchCreate": batch_create, "SearchRequest": search_req, "SearchPage": search_page,
     "ResponseRequest": resp_req, "Response": resp_obj,
     "FineTuningJobCreate": ft_create, "FineTuningJob": ft_job, "FineTuningJobList": listing("#/components/schemas/FineTuningJob"),
     "FineTuningJobEventList": listing("#/components/schemas/FineTuningJobEvent"), "FineTuningJobEvent": ft_event,
     "FineTuningJobCheckpoint": ft_ckpt, "FineTuningJobCheckpointList": listing("#/components/schemas/FineTuningJobCheckpoint"),
     "ModelDeleted": deleted("model"), "Model": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
       "id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"}, "owned_by": {"type": "string"},
       "root": {"type": "string", "description": "A fine-tuned model's base."}}}}},
 "paths": {
  "/v1/chat/completions": {"post": {"operationId": "createChatCompletion", "summary": "A chat completion, whole or streamed.",
     "security": SEC, "requestBody": json_body("#/components/schemas/ChatCompletionRequest"),
     "responses": {"200": ok("#/components/schemas/ChatCompletion", "The completion.", sse=True), **errs(*GEN_ERRS)}}},
  "/v1/completions": {"post": {"operationId": "createCompletion", "summary": "A text completion, whole or streamed.",
     "security": SEC, "requestBody": json_body("#/components/schemas/CompletionRequest"),
     "responses": {"200": ok("#/components/schemas/Completion", "The completion.", sse=True), **errs(*GEN_ERRS)}}},
  "/v1/embeddings": {"post": {"operationId": "createEmbedding", "summary": "Embeddings of one or more inputs.",
     "security": SEC, "requestBody": json_body("#/components/schemas/EmbeddingRequest"),
     "responses": {"200": ok("#/components/schemas/EmbeddingList", "The embeddings."), **errs(*GEN_ERRS)}}},
  "/v1/models": {"get": {"operationId": "listModels", "summary": "The models this user may use.", "security": SEC,
     "responses": {"200": ok("#/components/schemas/ModelList", "The models."), **errs(*AUTH_ERRS)}}},
  "/v1/files": {
    "post": {"operationId": "createFile", "summary": "Upload a file (multipart/form-data: `file` and `purpose`); it belongs to the uploader.",
     "security": SEC, "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/FileUpload"}}}},
     "responses": {"200": ok("#/components/schemas/File", "The stored file."),
       **errs("400", "401", "403", "408", "503"), "413": ERRS["413f"], "429": ERRS["429f"]}},
    "get": {"operationId": "listFiles", "summary": "The caller's files, newest first unless `order=asc`.", "security": SEC,
     "parameters": [
       {"name": "purpose", "in": "query", "schema": {"type": "string"}},
       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
       {"name": "after", "in": "query", "schema": {"type": "string"}, "description": "A file id: the files after it, in the order asked."},
       {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}}],
     "responses": {"200": ok("#/components/schemas/FileList", "The files."), **errs(*FILE_ERRS)}}},
  "/v1/files/{file_id}": {
    "get": {"operationId": "retrieveFile", "summary": "One of the caller's files (404 for anyone else's).", "security": SEC,
     "parameters": file_param, "responses": {"200": ok("#/components/schemas/File", "The file."), **errs(*FILE_ERRS)}},
    "delete": {"operationId": "deleteFile", "summary": "Delete one of the caller's files.", "security": SEC,
     "parameters": file_param, "responses": {"200": ok("#/components/schemas/FileDeleted", "Deleted."), **errs(*FILE_ERRS)}}},
  "/v1/files/{file_id}/content": {"get": {"operationId": "downloadFile", "summary": "A file's bytes.", "security": SEC,
     "parameters": file_param,
     "responses": {"200": {"description": "The bytes.", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
       **errs(*FILE_ERRS)}}},
  "/v1/vector_stores": {
    "post": {"operationId": "createVectorStore", "summary": "Create a vector store (optionally with files, ingested in the background).", "security": SEC,
     "requestBody": json_body("#/components/schemas/VectorStoreCreate"),
     "responses": {"200": ok("#/components/schemas/VectorStore", "The store."), **errs(*VS_ERRS)}},
    "get": {"operationId": "listVectorStores", "summary": "The caller's stores and those shared with their groups.", "security": SEC,
     "parameters": PAGE, "responses": {"200": ok("#/components/schemas/VectorStoreList", "The stores."), **errs(*VS_ERRS)}}},
  "/v1/vector_stores/{vector_store_id}": {
    "get": {"operationId": "retrieveVectorStore", "summary": "A store the caller may read (404 otherwise).", "security": SEC,
     "parameters": VS, "responses": {"200": ok("#/components/schemas/VectorStore", "The store."), **errs(*VS_ERRS)}},
    "post": {"operationId": "modifyVectorStore", "summary": "Rename, new metadata, new shares (its owner).", "security": SEC,
     "parameters": VS, "requestBody": json_body("#/components/schemas/VectorStoreModify"),
     "responses": {"200": ok("#/components/schemas/VectorStore", "The store."), **errs(*VS_ERRS)}},
    "delete": {"operationId": "deleteVectorStore", "summary": "Delete a store and its chunks (the files stay).", "security": SEC,
     "parameters": VS, "responses": {"200": ok("#/components/schemas/VectorStoreDeleted", "Deleted."), **errs(*VS_ERRS)}}},
  "/v1/vector_stores/{vector_store_id}/files": {
    "post": {"operationId": "createVectorStoreFile", "summary": "Attach one of the caller's files (ingested in the background).", "security": SEC,
     "parameters": VS, "requestBody": json_body("#/components/schemas/VectorStoreFileCreate"),
     "responses": {"200": ok("#/components/schemas/VectorStoreFile", "The attached file."), **errs(*VS_ERRS)}},
    "get": {"operationId": "listVectorStoreFiles", "summary": "A store's files.", "security": SEC,
     "parameters": VS + PAGE + [FILTER], "responses": {"200": ok("#/components/schemas/VectorStoreFileList", "The files."), **errs(*VS_ERRS)}}},
  "/v1/vector_stores/{vector_store_id}/files/{file_id}": {
    "get": {"operationId": "retrieveVectorStoreFile", "summary": "One file of a store, with its status.", "security": SEC,
     "parameters": VS + file_param, "responses": {"200": ok("#/components/schemas/VectorStoreFile", "The file."), **errs(*VS_ERRS)}},
    "post": {"operationId": "updateVectorStoreFile", "summary": "New attributes.", "security": SEC,
     "parameters": VS + file_param, "requestBody": json_body("#/components/schemas/VectorStoreFileUpdate"),
     "responses": {"200": ok("#/components/schemas/VectorStoreFile", "The file."), **errs(*VS_ERRS)}},
    "delete": {"operationId": "deleteVectorStoreFile", "summary": "Detach a file and drop its chunks (the file stays).", "security": SEC,
     "parameters": VS + file_param, "responses": {"200": ok("#/components/schemas/VectorStoreFileDeleted", "Detached."), **errs(*VS_ERRS)}}},
  "/v1/vector_stores/{vector_store_id}/file_batches": {
    "post": {"operationId": "createVectorStoreFileBatch", "summary": "Attach several files at once.", "security": SEC,
     "parameters": VS, "requestBody": json_body("#/components/schemas/FileBatchCreate"),
     "responses": {"200": ok("#/components/schemas/FileBatch", "The batch."), **errs(*VS_ERRS)}}},
  "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}": {
    "get": {"operationId": "retrieveVectorStoreFileBatch", "summary": "A batch and its file counts.", "security": SEC,
     "parameters": VS + BATCH, "responses": {"200": ok("#/components/schemas/FileBatch", "The batch."), **errs(*VS_ERRS)}}},
  "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel": {
    "post": {"operationId": "cancelVectorStoreFileBatch", "summary": "Cancel a batch's files not yet ingested.", "security": SEC,
     "parameters": VS + BATCH, "responses": {"200": ok("#/components/schemas/FileBatch", "The batch."), **errs(*VS_ERRS)}}},
  "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files": {
    "get": {"operationId": "listVectorStoreFileBatchFiles", "summary": "A batch's files.", "security": SEC,
     "parameters": VS + BATCH + PAGE + [FILTER], "responses": {"200": ok("#/components/schemas/VectorStoreFileList", "The files."), **errs(*VS_ERRS)}}},
  "/v1/vector_stores/{vector_store_id}/search": {
    "post": {"operationId": "searchVectorStore", "summary": "Search a store: BM25 and embeddings fused (default), dense or lexical; attribute filters.", "security": SEC,
     "parameters": VS, "requestBody": json_body("#/components/schemas/SearchRequest"),
     "responses": {"200": ok("#/components/schemas/SearchPage", "The results, best first."), **errs(*GEN_ERRS)}}},
  "/v1/responses": {
    "post": {"operationId": "createResponse", "summary": "An answer (whole or streamed as Responses API events), with `file_search` over vector stores and `file_citation` annotations.", "security": SEC,
     "requestBody": json_body("#/components/schemas/ResponseRequest"),
     "responses": {"200": {"description": "The response.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Response"}},
         "text/event-stream": {"schema": {"type": "string"}, "description": "With `stream: true`: `event: response.created`, ..., `response.output_text.delta`, ..., `response.completed`."}}},
       **errs(*GEN_ERRS)}}},
  "/v1/fine_tuning/jobs": {
    "post": {"operationId": "createFineTuningJob", "summary": "Fine-tune a served model with LoRA on one of the caller's `fine-tune` files; the job queues for the trainer and the memory budget.", "security": SEC,
     "requestBody": json_body("#/components/schemas/FineTuningJobCreate"),
     "responses": {"200": ok("#/components/schemas/FineTuningJob", "The job."), **errs(*FT_ERRS)}},
    "get": {"operationId": "listFineTuningJobs", "summary": "The caller's jobs (teachers and admins: everyone's), newest first.", "security": SEC,
     "parameters": FT_PAGE, "responses": {"200": ok("#/components/schemas/FineTuningJobList", "The jobs."), **errs(*FT_ERRS)}}},
  "/v1/fine_tuning/jobs/{fine_tuning_job_id}": {
    "get": {"operationId": "retrieveFineTuningJob", "summary": "A job (its owner, teachers and admins; 404 otherwise).", "security": SEC,
     "parameters": FT, "responses": {"200": ok("#/components/schemas/FineTuningJob", "The job."), **errs(*FT_ERRS)}}},
  "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel": {
    "post": {"operationId": "cancelFineTuningJob", "summary": "Cancel a job waiting or training: its trainer is stopped and its memory given back before this answers.", "security": SEC,
     "parameters": FT, "responses": {"200": ok("#/components/schemas/FineTuningJob", "The job."), **errs(*FT_ERRS)}}},
  "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events": {
    "get": {"operationId": "listFineTuningEvents", "summary": "A job's events, newest first: messages and per-step metrics.", "security": SEC,
     "parameters": FT + FT_PAGE, "responses": {"200": ok("#/components/schemas/FineTuningJobEventList", "The events."), **errs(*FT_ERRS)}}},
  "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints": {
    "get": {"operationId": "listFineTuningCheckpoints", "summary": "A job's checkpoints, newest first.", "security": SEC,
     "parameters": FT + FT_PAGE, "responses": {"200": ok("#/components/schemas/FineTuningJobCheckpointList", "The checkpoints."), **errs(*FT_ERRS)}}},
  "/v1/models/{model}": {
    "get": {"operationId": "retrieveModel", "summary": "A model the caller may use (configured, or fine-tuned and theirs or shared with them).", "security": SEC,
     "parameters": model_param, "responses": {"200": ok("#/components/schemas/Model", "The model."), **errs("401", "403", "404", "503")}},
    "delete": {"operationId": "deleteModel", "summary": "Delete a fine-tuned model (its owner, teachers and admins): its adapter goes, its job stays.", "security": SEC,
     "parameters": model_param, "responses": {"200": ok("#/components/schemas/ModelDeleted", "Deleted."), **errs(*FT_ERRS)}}},
  "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness: the gateway answers.", "security": [{}],
     "responses": {"200": {"description": "Alive.", "content": {"text/plain": {"schema": {"const": "ok"}}}}}}},
  "/readyz": {"get": {"operationId": "readyz", "summary": "Readiness: every loaded model's engine is up (per-model detail for staff).",
     "security": SEC,
     "responses": {"200": ok("#/components/schemas/Ready", "Ready."), "503": ok("#/components/schemas/Ready", "Not ready.")}}},
  "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics (staff only when authentication is on).", "security": SEC,
     "responses": {"200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}, **errs(*AUTH_ERRS)}}},
  "/openapi.json": {"get": {"operationId": "openapi", "summary": "This description.", "security": [{}],
     "responses": {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
  "/admin/ps": {"get": {"operationId": "adminPs", "summary": "Every model: state, memory, slots, queue (admins).", "security": SEC,
     "responses": {"200": ok("#/components/schemas/Ps", "The fleet."), **errs(*AUTH_ERRS)}}},
  "/admin/reload": {"post": {"operationId": "adminReload", "summary": "Apply the configuration file's limits again (admins).", "security": SEC,
     "responses": {"200": {"description": "Reloaded.", "content": {"application/json": {"schema": {"type": "object",
         "required": ["reloaded", "limit_rules"], "properties": {"reloaded": {"const": True}, "limit_rules": {"type": "integer"}}}}}},
       **errs("400", *AUTH_ERRS)}}},
  "/admin/load/{model}": {"post": {"operationId": "adminLoad", "summary": "Load a managed model now (admins).", "security": SEC,
     "parameters": model_param,
     "responses": {"200": {"description": "Loaded.", "content": {"application/json": {"schema": {"type": "object",
         "required": ["model", "state"], "properties": {"model": {"type": "string"}, "state": {"const": "ready"}}}}}},
       **errs("400", "404", "429", *AUTH_ERRS)}}},
  "/admin/unload/{model}": {"post": {"operationId": "adminUnload", "summary": "Stop a managed model's engine (admins).", "security": SEC,
     "parameters": model_param,
     "responses": {"200": {"description": "Unloaded.", "content": {"application/json": {"schema": {"type": "object",
         "required": ["model", "state"], "properties": {"model": {"type": "string"}, "state": {"const": "unloaded"}}}}}},
       **errs("400", "404", *AUTH_ERRS)}}},
 }}
print(json.dumps(doc, indent=1))
