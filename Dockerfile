# The receiver's image. Build: docker build -t webhook-server .   (--build-arg BASE=... picks another
# Python 3.11+ Debian-based image; it must have python3 with venv, util-linux's setpriv, and coreutils.)
#
# Deploy it with deploy/stack.yml (docker stack deploy; the comments there say how), or by hand on a manager
# node with the Docker socket mounted:
#   docker service create --name webhook --constraint node.role==manager \
#     --mount type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock \
#     --mount type=volume,src=webhook-state,dst=/var/lib/webhook-server \
#     --secret webhook_token --secret webhook_api_token \
#     -e WEBHOOK_TOKEN_FILE=/run/secrets/webhook_token -e WEBHOOK_API_TOKEN_FILE=/run/secrets/webhook_api_token \
#     IMAGE
# One replica: the journal is an SQLite file on the manager's volume (WEBHOOK_DB below), where
# `docker exec CONTAINER webhook-server history` finds it too.
#
# Who the server runs as: the container starts as root only for the few shell lines of
# deploy/entrypoint.sh (installed as /usr/local/bin/webhook-server, so `docker exec ... webhook-server`
# goes through it too). They read the Docker socket's group id (`stat -c %g`, at start: it differs between
# hosts), make the journal volume the user's, and exec the real command with setpriv as the user
# `webhook` (uid and gid 10001, build argument APP_UID) with that group added, no capabilities and
# no_new_privs. gunicorn's master and workers never run as uid 0. To skip root entirely, run the service
# with --user 10001:GID (stack: `user: "10001:GID"`), GID being the socket's group on every manager; the
# volume must then be writable by 10001 (a new named volume is: it copies the image's directory).

ARG BASE=python:3.11-slim-bookworm

# ---- build: the package and its dependencies in a venv ---------------------------------------------
FROM ${BASE} AS build
WORKDIR /app
# build-ca.pem is optional: a build behind an intercepting proxy puts that proxy's CA bundle in the context
# under this name and passes --build-arg PIP_CERT=/app/build-ca.pem. It stays in this stage.
COPY pyproject.toml README.md build-ca.pe[m] ./
COPY webhook_server ./webhook_server
ARG PIP_CERT=""
RUN if [ -z "$PIP_CERT" ]; then unset PIP_CERT; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir . \
 && /opt/venv/bin/pip uninstall --yes pip

# ---- the image: the venv, the user, the wrapper ---------------------------------------------------
FROM ${BASE}
ARG APP_UID=10001
RUN groupadd --system --gid "$APP_UID" webhook \
 && useradd --system --uid "$APP_UID" --gid webhook --home-dir /home/webhook --create-home \
        --shell /usr/sbin/nologin webhook \
 && install -d -o webhook -g webhook -m 0750 /var/lib/webhook-server
COPY --from=build /opt/venv /opt/venv
COPY deploy/entrypoint.sh /usr/local/bin/webhook-server
COPY deploy_rules.yaml /etc/webhook-server/deploy_rules.yaml

# /opt/venv/bin is deliberately not on PATH: `webhook-server` is the wrapper above.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WEBHOOK_USER=webhook \
    WEBHOOK_BIND=0.0.0.0:9000 \
    WEBHOOK_RULES=/etc/webhook-server/deploy_rules.yaml \
    WEBHOOK_DB=/var/lib/webhook-server/journal.sqlite3 \
    WEBHOOK_LOG_FORMAT=json
# A new named volume starts as a copy of this directory: owned by webhook.
VOLUME /var/lib/webhook-server
EXPOSE 9000
# Asks the port `serve` listens on (WEBHOOK_BIND), so a service that changes it stays healthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; h, _, p = os.environ['WEBHOOK_BIND'].rpartition(':'); h = '127.0.0.1' if h in ('', '0.0.0.0', '[::]') else h; urllib.request.urlopen(f'http://{h}:{p}/healthz', timeout=2)"]
CMD ["webhook-server", "serve"]
