#!/usr/bin/env bash
# Checks the deployment files without Docker, a cluster or a model (see docs/deploy.md):
# Kubernetes schemas (kubernetes-validate --strict), cross-checks (static.py), `docker-compose
# config` when Debian's docker-compose is installed, and LiteLLM 1.108.7 running deploy/litellm.yaml
# in front of two stand-ins (smoke.py). Installs its Python tools in target/deploy-check.
set -euo pipefail
cd "$(dirname "$0")/../.."
V=target/deploy-check
if [ ! -x "$V/bin/litellm" ] || [ ! -x "$V/bin/kubernetes-validate" ]; then
  python3 -m venv "$V"
  "$V/bin/pip" install --quiet 'litellm[proxy]==1.108.7' 'prisma==0.15.0' 'kubernetes-validate==1.37.0'
fi
export LITELLM_LOCAL_MODEL_COST_MAP=True   # no fetch of LiteLLM's price map
"$V/bin/kubernetes-validate" --strict deploy/k8s/*.yaml
"$V/bin/python" deploy/check/static.py
if command -v docker-compose >/dev/null; then
  (cd deploy && HEARTH_API_KEY=x LITELLM_MASTER_KEY=x POSTGRES_PASSWORD=x docker-compose -f compose.yaml config -q) \
    && echo "ok   compose: docker-compose $(docker-compose version --short) config"
else
  echo "skip compose: docker-compose not installed (apt-get install docker-compose)"
fi
"$V/bin/python" deploy/check/smoke.py
