"""The official ollama client against running hearth servers (SmolLM2, and a synthetic model with
fill-in-the-middle tokens for `suffix`).

Usage: python3 ollama_client.py SMOLLM2_URL FIM_URL. Prints "ok" when every check passes. Asserts
shapes, equality between streamed and whole answers and validity, never what the model writes."""
import json
import sys

import jsonschema
import ollama

smol_url, fim_url = sys.argv[1], sys.argv[2]
client = ollama.Client(host=smol_url, timeout=120)
GREEDY = {"temperature": 0, "num_predict": 16}

models = client.list().models
assert len(models) == 1 and models[0].model, models
name = models[0].model
shown = client.show(name)
assert "completion" in shown.capabilities and "tools" in shown.capabilities, shown
assert any(k.endswith(".context_length") and v > 0 for k, v in shown.modelinfo.items()), shown.modelinfo
assert shown.details.format == "gguf" and shown.details.quantization_level, shown.details
assert client.ps().models[0].model == name

# generate: whole and streamed give the same text; the last object carries Ollama's timings.
whole = client.generate(model=name, prompt="Write a haiku about rust.", options=GREEDY)
assert whole.done and whole.done_reason in ("stop", "length") and whole.response, whole
assert whole.eval_count > 0 and whole.eval_duration > 0 and whole.total_duration >= whole.eval_duration, whole
assert whole.prompt_eval_count > 0, whole
parts = list(client.generate(model=name, prompt="Write a haiku about rust.", options=GREEDY, stream=True))
assert all(not p.done for p in parts[:-1]) and parts[-1].done, parts[-1]
assert "".join(p.response for p in parts) == whole.response, (parts, whole)
assert parts[-1].eval_count == whole.eval_count
raw = client.generate(model=name, prompt="def add(a, b):", raw=True, options=GREEDY)
assert raw.done and raw.eval_count > 0, raw

# chat: the same, and a name of the client's choosing (Aider's ollama_chat/…) is served.
messages = [{"role": "user", "content": "Name three colours."}]
chat = client.chat(model="qwen2.5-coder:7b", messages=messages, options=GREEDY)
assert chat.message.role == "assistant" and chat.message.content and chat.model == "qwen2.5-coder:7b", chat
streamed = list(client.chat(model=name, messages=messages, options=GREEDY, stream=True))
assert "".join(c.message.content for c in streamed) == chat.message.content and streamed[-1].done, streamed[-1]

# format: a JSON Schema answer follows the schema.
person = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["name", "age"], "additionalProperties": False}
js = client.chat(model=name, messages=[{"role": "user", "content": "A person as JSON."}], format=person, options={"temperature": 0, "num_predict": 80})
jsonschema.validate(json.loads(js.message.content), person)

# tools: whatever the model decides, a call names a declared function with valid arguments,
# and a result can be sent back.
weather = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"], "additionalProperties": False}
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": weather}}]
ask = [{"role": "system", "content": "Always call a function."}, {"role": "user", "content": "What's the weather in Paris?"}]
for seed in range(4):
    r = client.chat(model=name, messages=ask, tools=tools, options={"temperature": 1.0, "seed": seed, "num_predict": 80})
    for call in r.message.tool_calls or []:
        assert call.function.name == "get_weather", call
        jsonschema.validate(dict(call.function.arguments), weather)
history = ask + [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                 {"role": "tool", "tool_name": "get_weather", "content": '{"temp": 21}'}]
after = client.chat(model=name, messages=history, options=GREEDY)
assert after.done and after.message.role == "assistant", after

# Fill-in-the-middle through `suffix`, on the model that has FIM tokens.
fim = ollama.Client(host=fim_url, timeout=60)
fim_name = fim.list().models[0].model
assert "insert" in fim.show(fim_name).capabilities
filled = fim.generate(model=fim_name, prompt="def f(", suffix="):\n    return x\n", options={"temperature": 0, "num_predict": 8})
assert filled.done and filled.eval_count == 8, filled
assert "insert" not in shown.capabilities

# Errors: Ollama's {"error": …} with the status.
try:
    client.chat(model=name, messages=messages, options={"temperature": 9})
    raise AssertionError("temperature 9 was accepted")
except ollama.ResponseError as e:
    assert e.status_code == 400 and "temperature" in e.error, e
try:
    client.generate(model=name, prompt="x", suffix="y")
    raise AssertionError("suffix without FIM tokens was accepted")
except ollama.ResponseError as e:
    assert e.status_code == 400 and "suffix" in e.error, e
print("ok")
