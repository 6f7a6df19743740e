"""Structured outputs and tools through `aula serve`, with the official
`openai` client, `jsonschema` and LangChain (issue 16's tests).

  python structured_client.py BASE_URL MODEL

1. `chat.completions.parse` with a Pydantic model, 50 varied prompts, some
   sampled: a parsed object every time.
2. A nested schema (enums, arrays, optional and anyOf fields), strict:
   every answer validates against it (`jsonschema`), streamed or not.
3. Round trips with `tool_choice` required and named, whole and streamed
   (the stream's tool-call deltas assembled as the client does): the call,
   its result, then an answer in text.
4. LangChain's bind_tools gets `AIMessage.tool_calls`.
Prints STRUCTURED-OK at the end.
"""
import json
import sys
from typing import Annotated, List, Literal, Optional, Union

import jsonschema
from openai import OpenAI
from pydantic import BaseModel, ConfigDict, Field

base, model = sys.argv[1], sys.argv[2]
c = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)


class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)
    population: int = Field(ge=0, le=100_000_000)


subjects = ["Paris", "Tokyo", "Lima", "a city by the sea", "a small town", "the capital of Kenya",
            "a city in Canada", "Rome", "a mountain town", "the largest city you know"]
forms = ["Tell me about {}.", "Describe {} as data.", "{}: name, country and population.",
         "Give facts on {}.", "What do you know about {}?"]
parsed = 0
for i in range(50):
    q = forms[i % len(forms)].format(subjects[i % len(subjects)])
    p = c.chat.completions.parse(model=model, messages=[{"role": "user", "content": q}], max_tokens=200,
                                 temperature=0 if i % 2 == 0 else 0.9, seed=i, response_format=City)
    ch = p.choices[0]
    assert ch.finish_reason == "stop", (q, ch)
    assert isinstance(ch.message.parsed, City), (q, ch.message)
    parsed += 1
print(f"parse(): {parsed}/50 parsed")


class Address(BaseModel):
    # additionalProperties: false, as OpenAI's strict mode requires.
    model_config = ConfigDict(extra="forbid")
    street: str = Field(max_length=40)
    zip: Optional[str] = Field(max_length=10)


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=40)
    role: Literal["student", "teacher", "admin"]
    age: Optional[int] = Field(ge=0, le=120)
    languages: List[Literal["python", "rust", "c", "r"]] = Field(max_length=3)
    # Every string bounded: on another CPU greedy text differs, and an
    # unbounded string could run to max_tokens.
    contact: Union[Address, Annotated[str, Field(max_length=60)]] = Field(description="an address or an e-mail")
    scores: List[int] = Field(max_length=4, json_schema_extra={"items": {"type": "integer", "minimum": 0, "maximum": 100}})


schema = Person.model_json_schema()
rf = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": schema}}
prompts = ["Describe a student who likes Rust.", "A teacher of statistics.", "Invent an admin.",
           "Someone who writes C.", "A person, any person."]
for i, q in enumerate(prompts * 2):
    msgs = [{"role": "user", "content": q}]
    if i % 2 == 0:
        r = c.chat.completions.create(model=model, messages=msgs, max_tokens=300, temperature=0.7, seed=i,
                                      response_format=rf)
        ch = r.choices[0]
        text, finish = ch.message.content, ch.finish_reason
    else:
        text, finish = "", None
        for chunk in c.chat.completions.create(model=model, messages=msgs, max_tokens=300, temperature=0.7,
                                               seed=i, response_format=rf, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
    assert finish == "stop", (q, finish, text)
    jsonschema.validate(json.loads(text), schema)
print("nested schema: 10/10 valid")

tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                    "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                                    "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
                       "required": ["a", "b"], "additionalProperties": False}}}]


def streamed_call(**kw):
    """The call of a streamed answer, assembled from its deltas."""
    calls, finish = {}, None
    for chunk in c.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        for tc in d.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                slot["id"] = tc.id
            if tc.function and tc.function.name:
                slot["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                slot["arguments"] += tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls", (finish, calls)
    assert len(calls) == 1 and calls[0]["id"] and calls[0]["name"], calls
    return calls[0]


for choice, q, want in [("required", "What is the weather in Oslo?", None),
                        ({"type": "function", "function": {"name": "add"}}, "What is 2 plus 3?", "add")]:
    for stream in (False, True):
        msgs = [{"role": "user", "content": q}]
        kw = dict(model=model, messages=msgs, tools=tools, tool_choice=choice, max_tokens=80, temperature=0)
        if stream:
            call = streamed_call(**kw)
            cid, name, args = call["id"], call["name"], call["arguments"]
        else:
            r = c.chat.completions.create(**kw)
            assert r.choices[0].finish_reason == "tool_calls", r
            tc = r.choices[0].message.tool_calls[0]
            cid, name, args = tc.id, tc.function.name, tc.function.arguments
        if want:
            assert name == want, name
        a = json.loads(args)
        result = "Sunny, 21 C" if name == "get_weather" else str(a["a"] + a["b"])
        msgs += [{"role": "assistant", "content": None,
                  "tool_calls": [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}]},
                 {"role": "tool", "tool_call_id": cid, "content": result}]
        r = c.chat.completions.create(model=model, messages=msgs, tools=tools, tool_choice="none",
                                      max_tokens=40, temperature=0)
        assert r.choices[0].message.content and not r.choices[0].message.tool_calls, r
print("round trips: 4/4")

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


class WeatherArgs(BaseModel):
    city: str = Field(max_length=40)


@tool(args_schema=WeatherArgs)
def get_weather(city: str) -> str:
    """Weather in a city."""
    return "sunny"


llm = ChatOpenAI(model=model, base_url=base + "/v1", api_key="none", max_retries=0, temperature=0, max_tokens=60)
msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather", msg
assert isinstance(msg.tool_calls[0]["args"].get("city"), str), msg.tool_calls
print("STRUCTURED-OK")
