"""Cross-checks between the deployment files and hearth's code that no schema sees: labels,
ports, names, the queue metric, LiteLLM's own config types. Optional: COMPOSE_SPEC=path to the
compose-spec JSON schema validates deploy/compose.yaml. Run by run.sh (needs PyYAML, litellm)."""
import os, pathlib, re, sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
D = ROOT / "deploy"
failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""))
    ok or failures.append(what)


# --- Kubernetes ---------------------------------------------------------------------------
k8s = {d["kind"]: d for f in sorted((D / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d}
dep, svc, hpa = k8s["Deployment"], k8s["Service"], k8s["HorizontalPodAutoscaler"]
pod = dep["spec"]["template"]
labels = pod["metadata"]["labels"]
c = {x["name"]: x for x in pod["spec"]["containers"]}["hearth"]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
subset = lambda a, b: all(b.get(k) == v for k, v in a.items())
check("k8s: Deployment selector matches its pod labels", subset(dep["spec"]["selector"]["matchLabels"], labels))
check("k8s: Service selector matches the pod labels", subset(svc["spec"]["selector"], labels))
check("k8s: Service targetPort is a named container port", all(p["targetPort"] in ports for p in svc["spec"]["ports"]))
probes = [c[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
check("k8s: probes GET /health on the http port", all(p["httpGet"]["path"] == "/health" and p["httpGet"]["port"] in ports for p in probes))
ann = pod["metadata"]["annotations"]
check("k8s: prometheus.io/port is the container's port", int(ann["prometheus.io/port"]) in ports.values() and ann["prometheus.io/path"] == "/metrics")
env = {e["name"]: e for e in c["env"]}
check("k8s: resourceFieldRef names the hearth container", env["RAYON_NUM_THREADS"]["valueFrom"]["resourceFieldRef"]["containerName"] == "hearth")
check("k8s: HEARTH_LEDGER and HEARTH_INSTANCE_ID set", {"HEARTH_LEDGER", "HEARTH_INSTANCE_ID", "HEARTH_API_KEY"} <= env.keys())
init = pod["spec"]["initContainers"][0]
check("k8s: init container pulls the model the server serves", init["args"][0] == "pull" and {e["name"]: e for e in init["env"]}["HEARTH_MODEL"] == env["HEARTH_MODEL"])
mounts = lambda x: {m["name"]: m["mountPath"] for m in x["volumeMounts"]}
check("k8s: init and server mount the models volume at the same path", mounts(init)["models"] == mounts(c)["models"] == "/var/lib/hearth/models")
check("k8s: grace period covers the preStop pause", dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 5)
ref = hpa["spec"]["scaleTargetRef"]
check("k8s: HPA scales this Deployment", ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"])
metrics_rs = (ROOT / "src/api/metrics.rs").read_text()
registered = {"hearth_" + n for n in re.findall(r'registry\.register\("([a-z_]+)"', metrics_rs)} if 'Registry::with_prefix("hearth")' in metrics_rs else set()
name = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
check(f"k8s: HPA metric {name} is registered in src/api/metrics.rs", name in registered, sorted(registered))

# --- compose ------------------------------------------------------------------------------
compose = yaml.safe_load((D / "compose.yaml").read_text())
services = compose["services"]
replicas = [n for n in services if n.startswith("hearth-")]
check("compose: two hearth replicas", len(replicas) == 2)
for n in replicas:
    s = services[n]
    check(f"compose: {n} ledger is PostgreSQL, instance id is its name", s["environment"]["HEARTH_LEDGER"].startswith("postgres://") and s["environment"]["HEARTH_INSTANCE_ID"] == n)
    check(f"compose: {n} answers as `hearth` too and has a stop grace period", "hearth" in s["networks"]["default"]["aliases"] and "stop_grace_period" in s)
    check(f"compose: {n} depends on services that exist", set(s["depends_on"]) <= set(services))
vols = lambda n: {v.split(":")[1]: v.split(":")[0] for v in services[n]["volumes"]}
check("compose: the pull service writes where replicas read", all(vols("pull")["/var/lib/hearth/models"] == vols(n)["/var/lib/hearth/models"] for n in replicas))
check("compose: each replica has its own HEARTH_HOME (the PostgreSQL spool)", len({vols(n)["/var/lib/hearth"] for n in replicas}) == len(replicas))
spec_path = os.environ.get("COMPOSE_SPEC")
if spec_path:
    import json, jsonschema
    errors = list(jsonschema.Draft7Validator(json.load(open(spec_path))).iter_errors(compose))
    check("compose: valid against the compose-spec schema", not errors, [e.message for e in errors])

# --- LiteLLM ------------------------------------------------------------------------------
cfg = yaml.safe_load((D / "litellm.yaml").read_text())
hosts = {re.match(r"https?://([^:/]+)", x).group(1) for x in [m["litellm_params"]["api_base"] for m in cfg["model_list"]] + [p["target"] for p in cfg["general_settings"]["pass_through_endpoints"]]}
check("litellm: every host it names is a compose service or alias", hosts <= set(services) | {"hearth"}, hosts)
check("litellm: pass-through `hearth` is also the k8s Service name", svc["metadata"]["name"] == "hearth")
try:
    import litellm
    from litellm.proxy._types import PassThroughGenericEndpoint
    from litellm.types.router import AllowedFailsPolicy, RetryPolicy
except ImportError:
    print("skip litellm: not installed")
else:
    rs = cfg["router_settings"]
    valid = set(litellm.Router.get_valid_args())
    check("litellm: every router_settings key is a Router argument", set(rs) <= valid, set(rs) - valid)
    RetryPolicy(**rs["retry_policy"]), AllowedFailsPolicy(**rs["allowed_fails_policy"])
    for p in cfg["general_settings"]["pass_through_endpoints"]:
        PassThroughGenericEndpoint(**p)
    check("litellm: retry_policy, allowed_fails_policy, pass_through_endpoints parse as LiteLLM's types", True)

print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
