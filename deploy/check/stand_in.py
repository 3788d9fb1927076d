"""A stand-in for one hearth replica (NOT hearth): its routes, auth and x-hearth-* headers with
canned answers, so that LiteLLM's routing and header handling can be checked without a model.
Usage: stand_in.py NAME PORT [ok|fail503|fail429]. Prints one line per request it gets."""
import asyncio, json, sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

NAME, PORT = sys.argv[1], int(sys.argv[2])
MODE = sys.argv[3] if len(sys.argv) > 3 else "ok"
COST = {"local": {"amount": 2.1e-08, "currency": "USD"}, "cloud": [{"model": "gpt-4o-mini", "amount": 4.2e-06, "currency": "USD"}], "price_version": "stand-in"}
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 4}, "cost": COST}
# As src/api/respond.rs writes them; a stream's headers lack the figures known only at the end.
HEADERS = {"x-hearth-model": "smollm2-135m-instruct-q4_1", "x-hearth-queue-ms": "0.4", "x-hearth-prompt-tokens": "12",
           "x-hearth-cached-tokens": "4", "x-stand-in": NAME}
DONE = {"x-hearth-generated-tokens": "3", "x-hearth-time-per-token-ms": "5.10",
        "x-hearth-local-cost": "0.000000021 USD", "x-hearth-cloud-cost": "0.000004200 USD; model=gpt-4o-mini"}


async def seen(req):
    body = await req.json() if req.method == "POST" else None
    print(json.dumps({"replica": NAME, "path": req.url.path, "auth": req.headers.get("authorization") or req.headers.get("x-api-key"), "body": body}), flush=True)
    if body and body.get("max_tokens") == 99:  # the smoke test's "slow request"
        await asyncio.sleep(1.0)
    return body


def failing():
    code = {"fail503": 503, "fail429": 429}.get(MODE)
    return code and JSONResponse({"error": {"message": "stand-in failure", "type": "unavailable_error"}}, status_code=code, headers={"retry-after": "1"})


def sse(events):
    async def gen():
        for name, data in events:
            yield (f"event: {name}\n" if name else "") + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
    return gen()


async def health(req):
    return JSONResponse({"status": "ok"}, status_code=503 if MODE != "ok" else 200)


async def chat(req):
    b = await seen(req)
    if failing(): return failing()
    if b.get("stream"):
        chunk = lambda delta, finish=None, **kw: {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": b["model"], "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **kw}
        return StreamingResponse(sse([(None, chunk({"role": "assistant", "content": "Hel"})), (None, chunk({"content": "lo"})),
                                      (None, chunk({}, "stop", usage=USAGE)), (None, "[DONE]")]), media_type="text/event-stream", headers=HEADERS)
    return JSONResponse({"id": "c1", "object": "chat.completion", "created": 1, "model": b["model"], "choices": [{"index": 0, "message": {"role": "assistant", "content": f"Hello from {NAME}"}, "finish_reason": "stop"}], "usage": USAGE}, headers=HEADERS | DONE)


async def completions(req):
    b = await seen(req)
    if failing(): return failing()
    return JSONResponse({"id": "t1", "object": "text_completion", "created": 1, "model": b["model"], "choices": [{"index": 0, "text": f" from {NAME}", "finish_reason": "length", "logprobs": None}], "usage": USAGE}, headers=HEADERS | DONE)


async def messages(req):
    b = await seen(req)
    if failing(): return failing()
    usage = {"input_tokens": 8, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0, "output_tokens": 3, "cost": COST}
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": b["model"], "content": [{"type": "text", "text": f"Hello from {NAME}"}], "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}
    if not b.get("stream"):
        return JSONResponse(msg, headers=HEADERS | DONE)
    start = dict(msg, content=[], stop_reason=None, usage={"input_tokens": 8, "output_tokens": 0})
    return StreamingResponse(sse([("message_start", {"type": "message_start", "message": start}),
                                  ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                                  ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"Hello from {NAME}"}}),
                                  ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                                  ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 3, "cost": COST}}),
                                  ("message_stop", {"type": "message_stop"})]), media_type="text/event-stream", headers=HEADERS)


async def responses(req):
    b = await seen(req)
    if failing(): return failing()
    text = {"type": "output_text", "text": f"Hello from {NAME}", "annotations": []}
    return JSONResponse({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": b["model"],
                         "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [text]}],
                         "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                         "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15, "input_tokens_details": {"cached_tokens": 4}, "output_tokens_details": {"reasoning_tokens": 0}, "cost": COST}},
                        headers=HEADERS | DONE)


async def infill(req):
    await seen(req)
    return JSONResponse({"content": f"    return a + b  # {NAME}", "stop": True, "cost": COST}, headers=HEADERS | DONE)


async def metrics(req):
    return PlainTextResponse("# TYPE hearth_queue_depth gauge\nhearth_queue_depth 0\n")


async def other(req):
    await seen(req)
    return JSONResponse({"error": {"message": "not in the stand-in"}}, status_code=404)


app = Starlette(routes=[Route("/health", health), Route("/metrics", metrics),
                        Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/completions", completions, methods=["POST"]),
                        Route("/v1/messages", messages, methods=["POST"]), Route("/v1/responses", responses, methods=["POST"]), Route("/infill", infill, methods=["POST"]),
                        Route("/{rest:path}", other, methods=["GET", "POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
