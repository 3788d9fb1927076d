"""The official openai client drives tool calls and structured output against running hearth servers.

Usage: python3 openai_tools.py SMOLLM2_URL GEMMA_URL API_KEY. Prints "ok" when every check passes.
Nothing here asserts what a small model happens to write: only that calls name declared functions,
that arguments and answers validate against their JSON Schemas, and that two paths agree."""
import json
import sys
from typing import Literal

import jsonschema
from openai import OpenAI
from pydantic import BaseModel, Field

smollm2_url, gemma_url, key = sys.argv[1], sys.argv[2], sys.argv[3]


def client(url):
    c = OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)
    return c, c.models.list().data[0].id


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
SEARCH = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "maxLength": 60},
        "filters": {
            "type": "object",
            "properties": {"lang": {"enum": ["en", "fr", "de"]}, "max": {"type": "integer", "minimum": 1, "maximum": 50}},
            "required": ["lang"],
            "additionalProperties": False,
        },
    },
    "required": ["query", "filters"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "search_docs", "description": "Search the documentation", "parameters": SEARCH}},
]
SCHEMAS = {"get_weather": WEATHER, "search_docs": SEARCH}
QUESTIONS = [
    "What's the weather like in {} this week?",
    "Find the docs about {} in French.",
    "Should I take an umbrella in {} tomorrow?",
    "Search for how to configure {}.",
    "How hot will it be in {}?",
]
PLACES = ["Paris", "Lyon", "Berlin", "Oslo", "Lima", "Quito", "Cairo", "Delhi", "Perth", "Tokyo"]


def check_calls(choice, only=None):
    """Every call names a declared function and its arguments validate; returns the calls."""
    calls = choice.message.tool_calls
    assert choice.finish_reason == "tool_calls", choice
    assert calls, choice
    for call in calls:
        assert call.type == "function" and call.id, call
        name = call.function.name
        assert name in SCHEMAS and (only is None or name == only), call
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[name])
    return calls


def forced_calls(c, model):
    """tool_choice required and named, greedy and at temperature 1.0: 50 of 50 calls each."""
    for choice_arg, only in [("required", None), ({"type": "function", "function": {"name": "search_docs"}}, "search_docs")]:
        greedy = 0
        for q in QUESTIONS:
            for place in PLACES:
                msgs = [{"role": "user", "content": q.format(place)}]
                r = c.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice=choice_arg, temperature=0, max_tokens=120, parallel_tool_calls=False)
                greedy += len(check_calls(r.choices[0], only))
        assert greedy == 50, greedy
        sampled = 0
        for i in range(5):
            msgs = [{"role": "user", "content": QUESTIONS[i].format(PLACES[i])}]
            r = c.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice=choice_arg, temperature=1.0, seed=i, n=10, max_tokens=120, parallel_tool_calls=False)
            for ch in r.choices:
                sampled += len(check_calls(ch, only))
        assert sampled == 50, sampled


def round_trip_and_stream(c, model):
    msgs = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = c.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120, parallel_tool_calls=False)
    calls = check_calls(first.choices[0])
    # The same request streamed: the deltas reassemble to the same calls.
    parts, finish = {}, None
    for chunk in c.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120, parallel_tool_calls=False, stream=True):
        for ch in chunk.choices:
            finish = ch.finish_reason or finish
            for d in ch.delta.tool_calls or []:
                p = parts.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                p["id"] = d.id or p["id"]
                p["name"] += (d.function.name or "") if d.function else ""
                p["arguments"] += (d.function.arguments or "") if d.function else ""
    assert finish == "tool_calls", finish
    streamed = [(parts[i]["name"], parts[i]["arguments"]) for i in sorted(parts)]
    assert streamed == [(x.function.name, x.function.arguments) for x in calls], (streamed, calls)
    assert all(parts[i]["id"] for i in parts), parts
    # The tool's answer goes back; the model answers in text.
    msgs.append(first.choices[0].message.model_dump(exclude_none=True))
    for call in calls:
        msgs.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})})
    final = c.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=40)
    ch = final.choices[0]
    assert ch.finish_reason in ("stop", "length") and isinstance(ch.message.content, str) and not ch.message.tool_calls, ch
    # A tool message answering no call is refused, naming the field.
    try:
        c.chat.completions.create(model=model, messages=msgs[:1] + [{"role": "tool", "tool_call_id": "nope", "content": "x"}], max_tokens=4)
        raise AssertionError("a tool message without a call was accepted")
    except Exception as e:  # openai.BadRequestError
        assert getattr(e, "status_code", None) == 400 and "messages[1].tool_call_id" in str(e), e


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address", "skills"],
    "additionalProperties": False,
}


def json_schema_answers(c, model):
    """50 of 50 answers validate: nested objects, arrays, enums, required, no extra keys."""
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    valid = 0
    for i in range(5):
        msgs = [{"role": "user", "content": f"Invent user number {i} of a web app, as JSON."}]
        r = c.chat.completions.create(model=model, messages=msgs, response_format=fmt, temperature=1.0, seed=i, n=10, max_tokens=200)
        for ch in r.choices:
            assert ch.finish_reason == "stop", ch
            jsonschema.validate(json.loads(ch.message.content), PERSON)
            valid += 1
    assert valid == 50, valid
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "A JSON object, please."}], response_format={"type": "json_object"}, temperature=0, max_tokens=200)
    ch = r.choices[0]
    assert ch.finish_reason == "length" or isinstance(json.loads(ch.message.content), dict), r


class Address(BaseModel):
    city: str = Field(max_length=30)
    country: Literal["FR", "DE", "US"]


class Contact(BaseModel):
    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=120)
    address: Address


def parsed(c, model):
    r = c.chat.completions.parse(model=model, messages=[{"role": "user", "content": "Make up a contact."}], response_format=Contact, temperature=0, max_tokens=200)
    got = r.choices[0].message.parsed
    assert isinstance(got, Contact) and isinstance(got.address, Address), r


smollm2, smollm2_model = client(smollm2_url)
gemma, gemma_model = client(gemma_url)
if "--skip-forced" not in sys.argv:
    forced_calls(smollm2, smollm2_model)
round_trip_and_stream(smollm2, smollm2_model)
round_trip_and_stream(gemma, gemma_model)
json_schema_answers(smollm2, smollm2_model)
json_schema_answers(gemma, gemma_model)
parsed(smollm2, smollm2_model)
print("ok")
