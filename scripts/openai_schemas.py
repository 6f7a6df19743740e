"""The part of OpenAI's published OpenAPI description that Aula's answers are
checked against (tests/conformance.rs): the schemas of the answers of every
endpoint Aula implements, with every schema they refer to.

    python3 scripts/openai_schemas.py OPENAPI_JSON COMMIT \
        > crates/aula/tests/data/openai-schemas.json

OPENAPI_JSON is openapi.json from github.com/openai/openai-openapi at COMMIT
(the commit is written into the output, so the test data names its source).
"""
import json, sys

ROOTS = [
    "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse", "CreateEmbeddingResponse",
    "ListModelsResponse", "Model", "DeleteModelResponse",
    "OpenAIFile", "ListFilesResponse", "DeleteFileResponse",
    "VectorStoreObject", "ListVectorStoresResponse", "DeleteVectorStoreResponse",
    "VectorStoreFileObject", "ListVectorStoreFilesResponse", "DeleteVectorStoreFileResponse",
    "VectorStoreFileBatchObject", "VectorStoreSearchResultsPage",
    "Response", "ResponseStreamEvent",
    "FineTuningJob", "ListPaginatedFineTuningJobsResponse",
    "ListFineTuningJobEventsResponse", "ListFineTuningJobCheckpointsResponse",
    "ErrorResponse",
]

path, commit = sys.argv[1], sys.argv[2]
doc = json.load(open(path))
schemas = doc["components"]["schemas"]
PREFIX = "#/components/schemas/"
keep, todo = {}, list(ROOTS)
while todo:
    name = todo.pop()
    if name in keep:
        continue
    keep[name] = schemas[name]

    def refs(v):
        if isinstance(v, dict):
            r = v.get("$ref")
            if isinstance(r, str) and r.startswith(PREFIX):
                todo.append(r[len(PREFIX):])
            for x in v.values():
                refs(x)
        elif isinstance(v, list):
            for x in v:
                refs(x)
    refs(schemas[name])


def strip(v, names=False):
    """Documentation (descriptions, titles, examples, x-oaiMeta) left out;
    in a `properties` map the keys are names, kept whatever they are."""
    if isinstance(v, dict):
        if names:
            return {k: strip(x) for k, x in v.items()}
        return {k: strip(x, k in ("properties", "patternProperties", "$defs"))
                for k, x in v.items()
                if not (k in ("description", "title") and isinstance(x, str))
                and k not in ("example", "examples", "x-oaiMeta")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


out = {
    "source": {"repository": "openai/openai-openapi", "commit": commit,
               "version": doc["info"]["version"], "file": "openapi.json"},
    "roots": ROOTS,
    "components": {"schemas": {k: strip(keep[k]) for k in sorted(keep)}},
}
json.dump(out, sys.stdout, indent=1, sort_keys=True)
sys.stdout.write("\n")
