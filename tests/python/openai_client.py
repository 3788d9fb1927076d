"""The official openai client against a running hearth: completions, chat, streaming, errors.

Usage: python3 openai_client.py BASE_URL API_KEY. Prints "ok" when every check passes."""
import sys

import openai
from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)

models = client.models.list().data
assert len(models) == 1, models
model = models[0].id

done = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
assert done.object == "text_completion", done
assert done.choices[0].text, done
assert done.usage.completion_tokens > 0 and done.usage.prompt_tokens > 0, done.usage

messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Say hello."}]
chat = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0, seed=3)
assert chat.choices[0].message.role == "assistant", chat
whole = chat.choices[0].message.content
assert whole, chat

parts, usage = [], None
stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=12, temperature=0, seed=3,
    stream=True, stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices:
        parts.append(chunk.choices[0].delta.content or "")
    if chunk.usage is not None:
        usage = chunk.usage
assert "".join(parts) == whole, (parts, whole)
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage

streamed = "".join(
    c.choices[0].text for c in client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True)
)
assert streamed == done.choices[0].text, (streamed, done.choices[0].text)

# A name of the client's choosing is served by the one model, and echoed back.
other = client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=4)
assert other.model == "gpt-4o" and other.choices[0].message.role == "assistant", other
try:
    client.chat.completions.create(model=model, messages=messages, temperature=9)
    raise AssertionError("temperature 9 must fail")
except openai.BadRequestError as e:
    assert e.body["param"] == "temperature", e.body

try:
    client.completions.create(model=model, prompt="x", best_of=3)
    raise AssertionError("best_of must be refused")
except openai.BadRequestError as e:
    assert e.body["param"] == "best_of", e.body

try:
    OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key must fail")
except openai.AuthenticationError:
    pass

print("ok")
