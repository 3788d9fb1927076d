"""Starts LiteLLM with deploy/litellm.yaml in front of two stand-ins (stand_in.py, not hearth) and
checks routing, retries, pass-through and what becomes of the x-hearth-* headers. Run by run.sh."""
import concurrent.futures, json, os, pathlib, subprocess, sys, tempfile, time

import httpx

HERE = pathlib.Path(__file__).parent
PY = sys.executable
LITELLM = str(pathlib.Path(PY).parent / "litellm")
PORT, P1, P2 = (int(os.environ.get(k, d)) for k, d in [("LITELLM_PORT", "4000"), ("STAND_IN_1", "18081"), ("STAND_IN_2", "18082")])
KEY = {"Authorization": "Bearer sk-smoke"}
BASE = f"http://127.0.0.1:{PORT}"
tmp = pathlib.Path(tempfile.mkdtemp(prefix="litellm-smoke-"))
procs, failures = {}, []


def start(name, *argv, log):
    procs[name] = subprocess.Popen(argv, stdout=open(tmp / log, "w"), stderr=subprocess.STDOUT, env=os.environ | {"HEARTH_API_KEY": "hk-smoke", "LITELLM_MASTER_KEY": "sk-smoke", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})


def stand_in(n, port, mode="ok"):
    if f"hearth-{n}" in procs:
        procs[f"hearth-{n}"].terminate(); procs[f"hearth-{n}"].wait()
    start(f"hearth-{n}", PY, str(HERE / "stand_in.py"), f"hearth-{n}", str(port), mode, log=f"hearth-{n}.log")


def seen(n):
    return [json.loads(l) for l in (tmp / f"hearth-{n}.log").read_text().splitlines() if l.startswith("{")]


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""))
    ok or failures.append(what)


def post(path, body, headers=KEY, stream=False):
    if stream:
        with httpx.stream("POST", BASE + path, json=body, headers=headers, timeout=30) as r:
            return r, "".join(r.iter_text())
    r = httpx.post(BASE + path, json=body, headers=headers, timeout=30)
    return r, r.text


# deploy/litellm.yaml with the replicas' host names pointed at the stand-ins; nothing else changed.
config = (HERE.parent / "litellm.yaml").read_text()
config = config.replace("http://hearth-1:8080", f"http://127.0.0.1:{P1}").replace("http://hearth-2:8080", f"http://127.0.0.1:{P2}").replace("http://hearth:8080", f"http://127.0.0.1:{P1}")
(tmp / "litellm.yaml").write_text(config)
try:
    stand_in(1, P1); stand_in(2, P2)
    start("litellm", LITELLM, "--config", str(tmp / "litellm.yaml"), "--host", "127.0.0.1", "--port", str(PORT), log="litellm.log")
    for _ in range(120):
        try:
            if httpx.get(BASE + "/health/liveliness", timeout=1).status_code == 200: break
        except httpx.HTTPError: pass
        time.sleep(1)
    else:
        sys.exit(f"LiteLLM did not start; see {tmp}/litellm.log")
    log = (tmp / "litellm.log").read_text()
    check("config: no ignored router_settings key", "is not a valid argument" not in log)

    chat = {"model": "hearth", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    r, _ = post("/v1/chat/completions", chat)
    check("chat: 200", r.status_code == 200, r.text)
    check("chat: cost headers arrive as llm_provider-x-hearth-*", r.headers.get("llm_provider-x-hearth-local-cost") == "0.000000021 USD", dict(r.headers))
    check("chat: no bare x-hearth-* header", not any(h.startswith("x-hearth-") for h in r.headers))
    check("chat: usage.cost kept in the body", r.json()["usage"].get("cost", {}).get("price_version") == "stand-in", r.text)
    check("chat: hearth got HEARTH_API_KEY, not the client's key", seen(1)[-1]["auth"] == "Bearer hk-smoke" if seen(1) else False)

    r, text = post("/v1/chat/completions", chat | {"stream": True, "stream_options": {"include_usage": True}}, stream=True)
    check("stream: llm_provider-x-hearth-queue-ms header", "llm_provider-x-hearth-queue-ms" in r.headers, dict(r.headers))
    check("stream: usage.cost in the last chunk", '"cost"' in text and "[DONE]" in text, text[-400:])

    r, _ = post("/v1/completions", {"model": "hearth", "prompt": "def f(", "suffix": ")\n", "max_tokens": 8})
    got = [s for s in seen(1) + seen(2) if s["path"] == "/v1/completions" and s["body"].get("suffix") == ")\n"]
    check("completions: reach hearth's /v1/completions with suffix", r.status_code == 200 and len(got) == 1, r.text)
    check("completions: usage.cost kept, x-hearth-* headers dropped (known LiteLLM behaviour)", "cost" in r.json()["usage"] and not any("x-hearth" in h for h in r.headers), dict(r.headers))

    r, _ = post("/v1/responses", {"model": "hearth", "input": "Hi", "max_output_tokens": 8})
    check("responses: reach hearth's /v1/responses", r.status_code == 200 and any(s["path"] == "/v1/responses" for s in seen(1) + seen(2)), r.text)
    check("responses: llm_provider-x-hearth-* headers, usage.cost kept", "llm_provider-x-hearth-local-cost" in r.headers and "cost" in r.json().get("usage", {}), (dict(r.headers), r.text[-300:]))

    msg = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}
    ant = {"x-api-key": "sk-smoke", "anthropic-version": "2023-06-01"}
    r, _ = post("/v1/messages", msg, headers=ant)
    got = [s for s in seen(1) + seen(2) if s["path"] == "/v1/messages" and s["body"]["model"] == msg["model"]]
    check("messages: 200, native /v1/messages upstream with the asked model", r.status_code == 200 and len(got) == 1, r.text)
    check("messages: usage.cost kept in the body", "cost" in r.json().get("usage", {}), r.text)
    check("messages: x-hearth-* headers dropped (known LiteLLM behaviour)", not any("x-hearth" in h for h in r.headers), dict(r.headers))
    r, text = post("/v1/messages", msg | {"stream": True}, headers=ant, stream=True)
    check("messages stream: Anthropic events, usage.cost in message_delta", "event: message_delta" in text and '"cost"' in text, text[-300:])

    r, _ = post("/infill", {"input_prefix": "def add(a, b):\n", "input_suffix": "\n"})
    check("/infill: pass-through, bare x-hearth-* headers", r.status_code == 200 and r.headers.get("x-hearth-local-cost") == "0.000000021 USD", dict(r.headers))
    r, _ = post("/hearth/v1/messages", msg)
    check("/hearth/v1/messages: pass-through, bare x-hearth-* headers", r.status_code == 200 and "x-hearth-cloud-cost" in r.headers, dict(r.headers))
    r, _ = post("/infill", {"input_prefix": "x"}, headers={})
    check("/infill without a key: 401", r.status_code == 401, r.text)
    r, _ = post("/v1/chat/completions", chat, headers={})
    check("chat without a key: 401", r.status_code == 401, r.text)

    before = len([s for s in seen(2) if s["body"] and s["body"].get("max_tokens") == 99])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post("/v1/chat/completions", chat | {"max_tokens": 99})[0].status_code, range(8)))
    on2 = len([s for s in seen(2) if s["body"] and s["body"].get("max_tokens") == 99]) - before
    check("least-busy: 8 concurrent requests spread over both replicas", codes == [200] * 8 and 0 < on2 < 8, f"{codes}, {on2} on hearth-2")

    # hearth-2 answers 503 (loading, draining): requests that hit it are retried on hearth-1.
    stand_in(2, P2, "fail503"); time.sleep(2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post("/v1/chat/completions", chat | {"max_tokens": 99})[0], range(8)))
    codes = [r.status_code for r in answers]
    retried = sum(int(r.headers.get("x-litellm-attempted-retries", 0)) for r in answers)
    failed_on_2 = len([s for s in seen(2) if s["body"] and s["body"].get("max_tokens") == 99])
    check("retries: hearth-2 answering 503, all 8 still 200", codes == [200] * 8 and failed_on_2 > 0 and retried == failed_on_2, f"{codes}, {failed_on_2} failed on hearth-2, {retried} retried")

    # hearth-1 (least-busy's pick on a tie) is gone, before any health check noticed: the retries
    # hit it until it cools down, then hearth-2 answers.
    stand_in(2, P2); time.sleep(32)  # hearth-2's cool-down from above ends
    procs.pop("hearth-1").terminate()
    answers = [post("/v1/chat/completions", chat)[0] for _ in range(4)]
    check("refused connection: hearth-1 gone, every request still 200", [r.status_code for r in answers] == [200] * 4, [(r.status_code, r.text[:120]) for r in answers])

    # hearth-1 back but answering 503: once its cool-down ends and a health check (every 30 s) has
    # failed, requests go straight to hearth-2, with no retry.
    stand_in(1, P1, "fail503"); time.sleep(40)
    answers = [post("/v1/chat/completions", chat)[0] for _ in range(4)]
    direct = [r.status_code == 200 and r.headers.get("x-litellm-attempted-retries") == "0" and f":{P2}/" in r.headers.get("x-litellm-model-api-base", "") for r in answers]
    check("health routing: hearth-1 failing its checks gets no request", all(direct), [(r.status_code, r.headers.get("x-litellm-attempted-retries"), r.headers.get("x-litellm-model-api-base")) for r in answers])
finally:
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        p.wait()
print(f"{len(failures)} failed; logs in {tmp}")
sys.exit(1 if failures else 0)
