# The receiver as a Swarm service. Run it on a manager node with the Docker socket mounted:
#   docker service create --name webhook --constraint node.role==manager \
#     --mount type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock \
#     --mount type=volume,src=webhook-state,dst=/state \
#     --secret webhook_token --secret webhook_api_token \
#     -e WEBHOOK_TOKEN_FILE=/run/secrets/webhook_token -e WEBHOOK_API_TOKEN_FILE=/run/secrets/webhook_api_token \
#     IMAGE
# One replica: the journal is an SQLite file on the manager's volume.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

WORKDIR /app
COPY pyproject.toml README.md ./
COPY webhook_server ./webhook_server
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir . && rm -rf /root/.cache
COPY deploy_rules.yaml /etc/webhook-server/deploy_rules.yaml

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WEBHOOK_RULES=/etc/webhook-server/deploy_rules.yaml \
    WEBHOOK_DB=/state/webhook.sqlite3
VOLUME /state
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/healthz', timeout=2)"]
CMD ["webhook-server", "serve", "--bind", "0.0.0.0:9000"]
