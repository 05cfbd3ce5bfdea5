#!/bin/sh
# certbot deploy hook: make nginx serve a renewed certificate.
#
# Install as /etc/letsencrypt/renewal-hooks/deploy/webhook-server-reload-proxy.sh (mode 0755). certbot runs
# every executable in that directory once per lineage after a *successful* renewal, and never on
# `certbot renew --dry-run`; it sets RENEWED_LINEAGE (the live/ directory) and RENEWED_DOMAINS
# (space-separated). `webhook-server reload-proxy` checks the new config with `nginx -t` inside the nginx
# tasks and reloads them (SIGHUP: no connection is dropped); if the check fails it reloads nothing.
#
# Two ways, chosen by the settings:
# - over the API (WEBHOOK_RELOAD_URL set): POST the receiver's /api/proxy/reload with curl, the API token
#   read from WEBHOOK_API_TOKEN_FILE. The receiver, which holds the Docker socket, runs the same reload. Here
#   only sh and curl are needed: certbot may run in a container or on another host. WEBHOOK_RELOAD_CACERT
#   names a CA file for an https URL that is not signed by a public CA.
# - locally (the default): run `webhook-server reload-proxy`, which needs the Docker socket here.
#
# Settings (WEBHOOK_RELOAD_URL and WEBHOOK_API_TOKEN_FILE; or DOCKER_HOST, WEBHOOK_RULES, RELOAD_PROXY_ARGS
# such as "--service a3_nginx --mode secrets", WEBHOOK_SERVER for the command's path) go in
# /etc/webhook-server/reload-proxy.env, so that updating this file keeps them.
set -eu

env_file=${WEBHOOK_RELOAD_ENV:-/etc/webhook-server/reload-proxy.env}
if [ -r "$env_file" ]; then
    # allexport: the file's plain VAR=value lines (DOCKER_HOST, WEBHOOK_RULES) must reach webhook-server's
    # environment, not stay shell variables of this script.
    set -a
    # shellcheck disable=SC1090  # the path is a setting
    . "$env_file"
    set +a
fi

webhook_server=${WEBHOOK_SERVER:-webhook-server}
lineage=${RENEWED_LINEAGE:-unknown lineage}
domains=${RENEWED_DOMAINS:-unknown domains}

log() {
    # stderr ends up in certbot's log (and on the terminal or in the timer's journal); syslog if there is one.
    printf 'webhook-server deploy hook: %s\n' "$*" >&2
    logger -t webhook-server-deploy-hook -- "$*" 2>/dev/null || true
}

log "renewed ${domains} (${lineage}); reloading nginx"

if [ -n "${WEBHOOK_RELOAD_URL:-}" ]; then
    token_file=${WEBHOOK_API_TOKEN_FILE:-}
    if [ -z "$token_file" ] || [ ! -r "$token_file" ]; then
        log "ERROR: WEBHOOK_RELOAD_URL is set but WEBHOOK_API_TOKEN_FILE (${token_file:-unset}) cannot be read;" \
            "nginx still serves the OLD certificate for ${domains}"
        exit 2
    fi
    answer=$(mktemp)
    trap 'rm -f "$answer"' EXIT
    # The token goes to curl on stdin (-H @-), never on its command line, where ps would show it.
    # --fail-with-body: an error status fails the hook and its body (nginx's error) is kept to log.
    if tr -d '\r\n' < "$token_file" | sed 's/^/Authorization: Bearer /' |
        curl --silent --show-error --fail-with-body --max-time 300 -X POST -H @- \
            ${WEBHOOK_RELOAD_CACERT:+--cacert "$WEBHOOK_RELOAD_CACERT"} \
            -o "$answer" "$WEBHOOK_RELOAD_URL"; then
        log "nginx now serves the renewed certificate for ${domains}: $(cat "$answer")"
        exit 0
    else
        status=$?
    fi
    log "ERROR: POST ${WEBHOOK_RELOAD_URL} failed (curl exit ${status}): $(cat "$answer" 2>/dev/null);" \
        "nginx still serves the OLD certificate for ${domains}. Fix the cause, then run the hook again or" \
        "call the URL by hand"
    exit "$status"
fi

# shellcheck disable=SC2086  # RELOAD_PROXY_ARGS is a list of options
if "$webhook_server" reload-proxy ${RELOAD_PROXY_ARGS:-}; then
    log "nginx now serves the renewed certificate for ${domains}"
else
    status=$?
    log "ERROR: reload-proxy failed (exit ${status}); nginx still serves the OLD certificate for ${domains}." \
        "Fix the cause, then run: ${webhook_server} reload-proxy ${RELOAD_PROXY_ARGS:-}"
    exit "$status"
fi
