#!/bin/sh
# certbot deploy hook: make nginx serve a renewed certificate.
#
# Install as /etc/letsencrypt/renewal-hooks/deploy/webhook-server-reload-proxy.sh (mode 0755). certbot runs
# every executable in that directory once per lineage after a *successful* renewal, and never on
# `certbot renew --dry-run`; it sets RENEWED_LINEAGE (the live/ directory) and RENEWED_DOMAINS
# (space-separated). `webhook-server reload-proxy` checks the new config with `nginx -t` inside the nginx
# tasks and reloads them (SIGHUP: no connection is dropped); if the check fails it reloads nothing.
#
# Settings (DOCKER_HOST, WEBHOOK_RULES, RELOAD_PROXY_ARGS such as "--service a3_nginx --mode secrets",
# WEBHOOK_SERVER for the command's path) go in /etc/webhook-server/reload-proxy.env, so that updating
# this file keeps them.
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
# shellcheck disable=SC2086  # RELOAD_PROXY_ARGS is a list of options
if "$webhook_server" reload-proxy ${RELOAD_PROXY_ARGS:-}; then
    log "nginx now serves the renewed certificate for ${domains}"
else
    status=$?
    log "ERROR: reload-proxy failed (exit ${status}); nginx still serves the OLD certificate for ${domains}." \
        "Fix the cause, then run: ${webhook_server} reload-proxy ${RELOAD_PROXY_ARGS:-}"
    exit "$status"
fi
