# The receiver as a Swarm service. Run it on a manager node with the Docker socket mounted:
#   docker service create --name webhook --constraint node.role==manager \
#     --mount type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock \
#     --mount type=volume,src=webhook-state,dst=/var/lib/webhook-server \
#     --secret webhook_token --secret webhook_api_token \
#     -e WEBHOOK_TOKEN_FILE=/run/secrets/webhook_token -e WEBHOOK_API_TOKEN_FILE=/run/secrets/webhook_api_token \
#     IMAGE
# One replica: the journal is an SQLite file on the manager's volume, at the default place for root
# (/var/lib/webhook-server/journal.sqlite3), where `docker exec ... webhook-server history` finds it too.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

WORKDIR /app
# build-ca.pem is optional: a build behind an intercepting proxy puts that proxy's CA bundle in the context
# under this name and passes --build-arg PIP_CERT=/app/build-ca.pem.
COPY pyproject.toml README.md build-ca.pe[m] ./
COPY webhook_server ./webhook_server
ARG PIP_CERT=""
RUN if [ -z "$PIP_CERT" ]; then unset PIP_CERT; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir . \
 && rm -rf /root/.cache /app/build-ca.pem
COPY deploy_rules.yaml /etc/webhook-server/deploy_rules.yaml

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WEBHOOK_BIND=0.0.0.0:9000 \
    WEBHOOK_RULES=/etc/webhook-server/deploy_rules.yaml
VOLUME /var/lib/webhook-server
EXPOSE 9000
# Asks the port `serve` listens on (WEBHOOK_BIND), so a service that changes it stays healthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; h, _, p = os.environ['WEBHOOK_BIND'].rpartition(':'); h = '127.0.0.1' if h in ('', '0.0.0.0', '[::]') else h; urllib.request.urlopen(f'http://{h}:{p}/healthz', timeout=2)"]
CMD ["webhook-server", "serve"]
