"""The official anthropic client against a running hearth that serves SmolLM2 under Claude's names.

Usage: python3 anthropic_client.py BASE_URL API_KEY. Prints "ok" when every check passes. Asserts
shapes, equality between paths and validity, never what the small model writes."""
import json
import sys

import anthropic
import jsonschema

base, key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=120)
MODEL = "claude-sonnet-4-5"
# Anthropic's API no longer takes sampling knobs; hearth still reads `temperature` (default 1.0).
GREEDY = {"temperature": 0}
messages = [{"role": "user", "content": "Say hello in three words."}]

# Create: a message with a text block, usage, a stop reason, the asked model echoed.
msg = client.messages.create(model=MODEL, max_tokens=24, system="You are brief.", messages=messages, extra_body=GREEDY)
assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL, msg
assert msg.content and msg.content[0].type == "text" and msg.content[0].text, msg
assert msg.stop_reason in ("end_turn", "max_tokens"), msg
assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg.usage
# hearth's cost rides along in usage, compared first with the Claude model that was asked for.
cost = msg.usage.model_extra["cost"]
assert cost["saved"]["vs"] == MODEL and cost["local"]["amount"] > 0, cost

# Stream: the events rebuild the same message.
with client.messages.stream(model=MODEL, max_tokens=24, system="You are brief.", messages=messages, extra_body=GREEDY) as stream:
    kinds = [e.type for e in stream]
    final = stream.get_final_message()
assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds, kinds
assert final.content[0].text == msg.content[0].text, (final.content, msg.content)
assert final.stop_reason == msg.stop_reason and final.usage.output_tokens == msg.usage.output_tokens, (final, msg)

# count_tokens: the same prompt the create call was billed for.
counted = client.messages.count_tokens(model=MODEL, system="You are brief.", messages=messages)
assert counted.input_tokens == msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0), (counted, msg.usage)

# Stop sequences end the turn with stop_reason "stop_sequence" when one is hit.
s = client.messages.create(model="claude-haiku-4-5", max_tokens=40, messages=[{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6"}], stop_sequences=[","], extra_body=GREEDY)
assert s.stop_reason in ("stop_sequence", "end_turn", "max_tokens") and "," not in s.content[0].text, s

# Tools: a forced call is a valid tool_use block; its result goes back; the model answers.
weather = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
tools = [{"name": "get_weather", "description": "Current weather in a city", "input_schema": weather}]
ask = [{"role": "user", "content": "What's the weather in Paris?"}]
call = client.messages.create(model=MODEL, max_tokens=100, messages=ask, tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}, extra_body=GREEDY)
assert call.stop_reason == "tool_use", call
uses = [b for b in call.content if b.type == "tool_use"]
assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id, call
jsonschema.validate(uses[0].input, weather)
with client.messages.stream(model=MODEL, max_tokens=100, messages=ask, tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}, extra_body=GREEDY) as stream:
    streamed = stream.get_final_message()
suses = [b for b in streamed.content if b.type == "tool_use"]
assert [(u.name, u.input) for u in suses] == [(u.name, u.input) for u in uses], (streamed.content, call.content)
history = ask + [{"role": "assistant", "content": [b.model_dump() for b in call.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": json.dumps({"temp": 21})}]}]
answer = client.messages.create(model=MODEL, max_tokens=30, messages=history, tools=tools, tool_choice={"type": "none"}, extra_body=GREEDY)
assert answer.stop_reason in ("end_turn", "max_tokens") and answer.content[0].type == "text", answer

# Structured output: output_config.format with a JSON Schema.
person = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
js = client.messages.create(model=MODEL, max_tokens=80, messages=[{"role": "user", "content": "A person as JSON."}],
                            output_config={"format": {"type": "json_schema", "schema": person}}, extra_body=GREEDY)
assert js.stop_reason == "end_turn", js
jsonschema.validate(json.loads(js.content[0].text), person)

# Errors come in Anthropic's shape, with the SDK's exception classes.
try:
    client.messages.create(model=MODEL, max_tokens=10, messages=messages, extra_body={"temperature": 7})
    raise AssertionError("temperature 7 was accepted")
except anthropic.BadRequestError as e:
    assert e.status_code == 400 and e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body
    assert "temperature" in e.body["error"]["message"], e.body
try:
    client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}])
    raise AssertionError("an image was accepted")
except anthropic.BadRequestError as e:
    assert "messages[0].content[0]" in e.body["error"]["message"], e.body
wrong = anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0)
try:
    wrong.messages.create(model=MODEL, max_tokens=5, messages=messages)
    raise AssertionError("a wrong key was accepted")
except anthropic.AuthenticationError as e:
    assert e.body["error"]["type"] == "authentication_error", e.body
print("ok")
