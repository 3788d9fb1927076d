"""The openai client's Responses API (what Codex CLI speaks) against a running hearth.

Usage: python3 openai_responses.py BASE_URL. Prints "ok" when every check passes. Asserts shapes,
equality between streamed and whole answers and validity, never what the model writes."""
import json
import sys

import jsonschema
import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="any", max_retries=0, timeout=120)
MODEL = "gpt-5-codex"

whole = client.responses.create(model=MODEL, instructions="You are brief.", input="Name a colour.", max_output_tokens=16, temperature=0)
assert whole.object == "response" and whole.status in ("completed", "incomplete") and whole.model == MODEL, whole
assert whole.output[0].type == "message" and whole.output_text, whole
assert whole.usage.input_tokens > 0 and whole.usage.output_tokens > 0, whole.usage

# Streamed: the deltas add up to the same text; events are numbered in order.
events = list(client.responses.create(model=MODEL, instructions="You are brief.", input="Name a colour.", max_output_tokens=16, temperature=0, stream=True))
kinds = [e.type for e in events]
assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds
assert [e.sequence_number for e in events] == list(range(len(events))), [e.sequence_number for e in events]
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == whole.output_text and events[-1].response.output_text == whole.output_text, (text, whole.output_text)

# A function tool, forced: a valid call; its output goes back; the model answers in text.
params = {"type": "object", "properties": {"command": {"type": "string", "maxLength": 40}}, "required": ["command"], "additionalProperties": False}
tools = [{"type": "function", "name": "shell", "description": "Run a shell command", "parameters": params, "strict": True},
         {"type": "web_search"}]
raw = client.responses.with_raw_response.create(model=MODEL, input="List the files here.", tools=tools, tool_choice="required", parallel_tool_calls=False, max_output_tokens=80, temperature=0)
assert raw.headers.get("x-hearth-ignored-tools") == "web_search", raw.headers
called = raw.parse()
calls = [o for o in called.output if o.type == "function_call"]
assert len(calls) == 1 and calls[0].name == "shell" and calls[0].call_id, called.output
jsonschema.validate(json.loads(calls[0].arguments), params)
streamed = list(client.responses.create(model=MODEL, input="List the files here.", tools=tools, tool_choice="required", parallel_tool_calls=False, max_output_tokens=80, temperature=0, stream=True))
args = "".join(e.delta for e in streamed if e.type == "response.function_call_arguments.delta")
assert args == calls[0].arguments, (args, calls[0].arguments)
follow = [{"role": "user", "content": [{"type": "input_text", "text": "List the files here."}]},
          {"type": "function_call", "call_id": calls[0].call_id, "name": "shell", "arguments": calls[0].arguments},
          {"type": "function_call_output", "call_id": calls[0].call_id, "output": "README.md\nsrc\n"}]
after = client.responses.create(model=MODEL, input=follow, tools=tools, tool_choice="none", max_output_tokens=20, temperature=0)
assert after.output[0].type == "message" and isinstance(after.output_text, str), after

# Structured output through text.format.
schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"], "additionalProperties": False}
js = client.responses.create(model=MODEL, input="Pick a colour.", text={"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": True}}, max_output_tokens=30, temperature=0)
jsonschema.validate(json.loads(js.output_text), schema)

# Stateless: a previous response cannot be continued.
try:
    client.responses.create(model=MODEL, input="more", previous_response_id=whole.id)
    raise AssertionError("previous_response_id was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "previous_response_id", e.body
print("ok")
