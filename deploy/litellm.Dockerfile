# LiteLLM proxy, pinned to the version deploy/litellm.yaml was checked with (from PyPI, Python 3.11
# as in that check). prisma: without it LiteLLM 1.108.7 answers a request with no key with a 500
# (its error path imports prisma) instead of a 401; no database is used.
FROM python:3.11-slim-bookworm
RUN pip install --no-cache-dir 'litellm[proxy]==1.108.7' 'prisma==0.15.0' \
    && useradd --system --uid 10002 --create-home litellm
USER litellm
# The cost map ships inside the package: do not fetch it from the internet at start.
ENV LITELLM_LOCAL_MODEL_COST_MAP=True
COPY litellm.yaml /etc/litellm/config.yaml
EXPOSE 4000
ENTRYPOINT ["litellm", "--config", "/etc/litellm/config.yaml", "--host", "0.0.0.0", "--port", "4000"]
