"""A fleet on loopback, all real: PostgreSQL (Debian's package) in a temporary directory, two
`hearth serve` replicas sharing its ledger, and the LiteLLM proxy in front with deploy/litellm.yaml
(replica addresses rewritten to loopback ports, background health checks off so that every ledger
row is a client's). Driven through the proxy with the official openai client:

1. 40 mixed requests (chat, completions, streams) give 40 rows across both instance ids with the
   costs the responses reported, and `hearth costs --ledger postgres://…` sums them;
2. a replica SIGKILLed under load: the proxy retries on the other, every answered request has its
   row, and the ledger's sum equals the clients';
3. PostgreSQL stopped for 20 requests and started again: all 20 rows arrive, each once;
4. SIGTERM during 4 streams: each finishes or ends with an error event, the replica exits 0, and
   the 4 rows are in the ledger.

Usage: fleet.py HEARTH_BINARY MODEL LITELLM_CONFIG. Prints "ok" when every check passed.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import openai

HEARTH, MODEL, CONFIG = sys.argv[1:4]
KEY, MASTER = "replica-key", "sk-fleet-master"
TMP = tempfile.mkdtemp(prefix="hearth-fleet-")
ROOT = os.getuid() == 0
children = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(cmd):
    return (["runuser", "-u", "postgres", "--"] if ROOT else []) + cmd


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    assert initdb, "PostgreSQL is not installed: scripts/test.sh installs Debian's package (apt-get install postgresql)"
    return os.path.dirname(initdb)


class Postgres:
    def __init__(self):
        self.bin, self.port = pg_bin(), free_port()
        self.dir = os.path.join(TMP, "pg")
        os.makedirs(self.dir)
        if ROOT:
            subprocess.run(["chown", "-R", "postgres", TMP], check=True)
        self.ctl(["initdb", "-D", self.dir + "/data", "-U", "hearth", "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.start()
        self.url = f"postgres://hearth@127.0.0.1:{self.port}/postgres"

    def ctl(self, cmd):
        subprocess.run(as_postgres([os.path.join(self.bin, cmd[0])] + cmd[1:]), check=True, capture_output=True)

    def start(self):
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl(["pg_ctl", "-D", self.dir + "/data", "-o", opts, "-l", self.dir + "/log", "-w", "start"])

    def stop(self, mode="fast"):
        self.ctl(["pg_ctl", "-D", self.dir + "/data", "-m", mode, "-w", "stop"])

    def query(self, sql):
        out = subprocess.run(["psql", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "hearth", "-d", "postgres", "-c", sql], check=True, capture_output=True, text=True)
        return [line.split("|") for line in out.stdout.splitlines() if line]


def wait_for(url, timeout=120, headers=None):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} never answered 200")


class Replica:
    def __init__(self, name, pg):
        self.name, self.port = name, free_port()
        args = [HEARTH, "serve", "-m", MODEL, "--port", str(self.port), "--api-key", KEY, "--ledger", pg.url,
                "--ledger-spool", os.path.join(TMP, f"spool-{name}.sqlite"), "--instance-id", name, "--shutdown-timeout", "2"]
        self.log = open(os.path.join(TMP, f"{name}.log"), "w")
        self.proc = subprocess.Popen(args, stderr=self.log, stdout=self.log, env={**os.environ, "HEARTH_HOME": TMP + "/home-" + name})
        children.append(self.proc)
        wait_for(f"http://127.0.0.1:{self.port}/health")


def start_litellm(a, b):
    text = open(CONFIG).read()
    assert "http://hearth-1:8080" in text and "http://hearth-2:8080" in text
    text = text.replace("http://hearth-1:8080", f"http://127.0.0.1:{a.port}").replace("http://hearth-2:8080", f"http://127.0.0.1:{b.port}")
    text = text.replace("http://hearth:8080", f"http://127.0.0.1:{a.port}")
    # Health checks are real completions: they would be ledger rows no client asked for.
    text = text.replace("background_health_checks: true", "background_health_checks: false")
    path = os.path.join(TMP, "litellm.yaml")
    open(path, "w").write(text)
    port = free_port()
    env = {**os.environ, "HEARTH_API_KEY": KEY, "LITELLM_MASTER_KEY": MASTER, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    litellm = os.path.join(os.path.dirname(sys.executable), "litellm")
    proc = subprocess.Popen([litellm, "--config", path, "--port", str(port), "--host", "127.0.0.1"], stdout=open(os.path.join(TMP, "litellm.log"), "w"), stderr=subprocess.STDOUT, env=env)
    children.append(proc)
    wait_for(f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
    return port


def ask(client, i):
    """One request of kind i % 4; (response id, local cost reported)."""
    kind = i % 4
    if kind == 0:
        r = client.chat.completions.create(model="hearth", messages=[{"role": "user", "content": f"Say {i}."}], max_tokens=8, temperature=0)
        return r.id, r.usage.model_extra["cost"]["local"]["amount"]
    if kind == 1:
        r = client.completions.create(model="hearth", prompt=f"def f{i}(x):", max_tokens=8, temperature=0)
        return r.id, r.usage.model_extra["cost"]["local"]["amount"]
    stream = (client.chat.completions.create if kind == 2 else client.completions.create)(
        model="hearth", max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True},
        **({"messages": [{"role": "user", "content": f"Count to {i}."}]} if kind == 2 else {"prompt": f"# {i}\n"}))
    rid, cost = None, None
    for chunk in stream:
        rid = rid or chunk.id
        if chunk.usage is not None:
            cost = chunk.usage.model_extra["cost"]["local"]["amount"]
    return rid, cost


def rows(pg, where="true"):
    return {r[0]: (r[1], float(r[2])) for r in pg.query(f"SELECT id, instance_id, local_cost FROM requests WHERE {where}")}


def close(a, b):
    return abs(a - b) <= 1e-9 + 1e-6 * abs(b)


def main():
    pg = Postgres()
    a, b = Replica("replica-a", pg), Replica("replica-b", pg)
    port = start_litellm(a, b)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER, max_retries=0, timeout=120)

    # 1. 40 mixed requests, 4 at a time.
    answers, lock = {}, threading.Lock()

    def worker(ids):
        for i in ids:
            rid, cost = ask(client, i)
            with lock:
                answers[rid] = cost
    threads = [threading.Thread(target=worker, args=(range(w, 40, 4),)) for w in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(answers) == 40 and all(c is not None for c in answers.values()), answers
    stored = rows(pg)
    assert set(stored) == set(answers), f"{len(stored)} rows for {len(answers)} answers: {set(stored) ^ set(answers)}"
    instances = {inst for inst, _ in stored.values()}
    assert instances == {"replica-a", "replica-b"}, instances
    for rid, cost in answers.items():
        assert close(stored[rid][1], cost), (rid, stored[rid], cost)
    out = subprocess.run([HEARTH, "costs", "--by", "instance", "--format", "json", "--ledger", pg.url], capture_output=True, text=True, env={**os.environ, "HEARTH_HOME": TMP + "/home-costs"})
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["total"]["requests"] == 40 and close(summary["total"]["local"], sum(answers.values())), summary["total"]
    assert sorted(g["key"] for g in summary["groups"]) == ["replica-a", "replica-b"], summary["groups"]
    log("1: 40 requests, 40 rows on", sorted(instances))

    # 2. SIGKILL replica b under load: the proxy retries on a; answered requests all have rows.
    before = set(rows(pg))
    answered, failed, stop = {}, [], threading.Event()

    def load(w):
        i = 0
        while not stop.is_set():
            try:
                rid, cost = ask(client, 1000 + w * 1000 + i)
                with lock:
                    answered[rid] = cost
            except Exception as e:  # noqa: BLE001 - counted, then checked
                failed.append((time.time(), repr(e)))
            i += 1
    threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
    [t.start() for t in threads]
    time.sleep(3)
    killed_at = time.time()
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    time.sleep(6)
    stop.set()
    [t.join() for t in threads]
    stored = rows(pg)
    new = {k: v for k, v in stored.items() if k not in before}
    missing = set(answered) - set(new)
    assert not missing, f"answered but not in the ledger: {missing}"
    # What was under way on b when it died may fail (a stream cut mid-way cannot be retried; a
    # retry may hit b again before LiteLLM cools it down); at most one per client, and only then.
    assert len(answered) >= 10 and len(failed) <= 3, (len(answered), failed)
    assert all(t - killed_at < 3 for t, _ in failed), [(round(t - killed_at, 2), e) for t, e in failed]
    # A row without an answer can only be a request b committed just as it was killed.
    extra = set(new) - set(answered)
    assert len(extra) <= 3 and all(stored[k][0] == "replica-b" for k in extra), extra
    assert close(sum(new[k][1] for k in answered), sum(answered.values()))
    log(f"2: SIGKILL under load: {len(answered)} answered, {len(failed)} failed, {len(extra)} rows the client never saw")

    # 3. PostgreSQL down for 20 requests; every row arrives once when it is back.
    pg.stop()
    during = {}
    for i in range(20):
        rid, cost = ask(client, 5000 + i)
        during[rid] = cost
    pg.start()
    end = time.time() + 60
    while time.time() < end and not set(during) <= set(rows(pg)):
        time.sleep(0.5)
    stored = rows(pg)
    assert set(during) <= set(stored), f"{len(set(during) - set(stored))} of 20 rows never arrived"
    counts = pg.query("SELECT count(*), count(DISTINCT id) FROM requests")[0]
    assert counts[0] == counts[1], counts
    log("3: 20 rows spooled while PostgreSQL was down, all written once after")

    # 4. SIGTERM during 4 streams straight to replica a: clean ends, exit 0, rows written.
    direct = openai.OpenAI(base_url=f"http://127.0.0.1:{a.port}/v1", api_key=KEY, max_retries=0, timeout=60)
    results = []

    def long_stream(n):
        ids, text, error = set(), "", None
        try:
            for chunk in direct.completions.create(model="x", prompt=f"List {n}:", max_tokens=n, stream=True, temperature=0, logit_bias={"0": -100, "2": -100}):
                ids.add(chunk.id)
                text += chunk.choices[0].text if chunk.choices else ""
        except openai.APIError as e:
            error = str(e)
        results.append((ids, error))
    threads = [threading.Thread(target=long_stream, args=(n,)) for n in (8, 8, 2000, 2000)]
    [t.start() for t in threads]
    time.sleep(1)
    before_term = time.time()
    a.proc.send_signal(signal.SIGTERM)
    code = a.proc.wait(timeout=30)
    [t.join() for t in threads]
    assert code == 0, f"replica a exited {code}"
    assert time.time() - before_term < 15
    for ids, error in results:
        assert len(ids) == 1, ids
        assert error is None or "shutting down" in error, error
    stream_ids = {next(iter(ids)) for ids, _ in results}
    assert stream_ids <= set(rows(pg)), "a stream's row is missing after SIGTERM"
    log("4: SIGTERM during 4 streams:", [e is None for _, e in results], "exit", code)
    print("ok")


try:
    main()
finally:
    for c in children:
        if c.poll() is None:
            c.kill()
    try:
        subprocess.run(as_postgres([os.path.join(pg_bin(), "pg_ctl"), "-D", os.path.join(TMP, "pg", "data"), "-m", "immediate", "stop"]), capture_output=True)
    except Exception:  # noqa: BLE001
        pass
    if os.environ.get("HEARTH_FLEET_KEEP"):
        log("kept", TMP)
    else:
        shutil.rmtree(TMP, ignore_errors=True)
