#!/bin/sh
# Installed in the image as /usr/local/bin/webhook-server, ahead of the real command
# (/opt/venv/bin/webhook-server): every way of running the CLI in the container goes through it, the
# image's CMD (`webhook-server serve`) as well as `docker exec CONTAINER webhook-server history`.
#
# Started as root (the image's default), it
#   1. reads the group id of the Docker socket (DOCKER_HOST if it is unix://, else /var/run/docker.sock;
#      no socket, e.g. DOCKER_HOST=ssh://..., means no extra group). It differs from host to host (Debian's
#      `docker` group is created with whatever id is free), so it is read here, at start, not at build time;
#   2. gives the journal volume to the unprivileged user if anything in it is not theirs yet (a volume
#      written by an image that ran as root, or a root `docker exec` that created a file);
#   3. execs the real command as that user (WEBHOOK_USER, `webhook`, uid/gid 10001 unless built otherwise)
#      with the socket's group as its only supplementary group, no capabilities, and no_new_privs (setuid
#      binaries cannot give any back). With `exec` all along, the gunicorn master is the container's PID 1:
#      `docker kill --signal HUP` reaches it.
# Started as any other user (`docker run --user`, a stack's `user:`), it runs the command as that user.
#
# Note that the socket's group is as good as root on the host to whoever holds it: the Docker API can
# start a privileged container. Dropping root keeps a bug in the receiver from writing to the container's
# files and from using capabilities, not from using Docker.
set -eu

real=/opt/venv/bin/webhook-server
user=${WEBHOOK_USER:-webhook}
state=/var/lib/webhook-server

if [ "$(id -u)" != 0 ]; then
    exec "$real" "$@"
fi

uid=$(id -u "$user")
gid=$(id -g "$user")
groups=$gid
case "${DOCKER_HOST:-}" in
    unix://*) socket=${DOCKER_HOST#unix://} ;;
    "") socket=/var/run/docker.sock ;;
    *) socket= ;;
esac
if [ -n "$socket" ] && [ -S "$socket" ]; then
    groups="$gid,$(stat -c %g "$socket")"
fi

if [ -d "$state" ]; then
    find "$state" -xdev ! -uid "$uid" -exec chown -h "$uid:$gid" {} + \
        || echo "webhook-server: cannot give $state to $user; the journal may not be writable" >&2
fi

HOME=$(getent passwd "$user" | cut -d: -f6)
USER=$user
LOGNAME=$user
export HOME USER LOGNAME
exec setpriv --reuid="$uid" --regid="$gid" --groups="$groups" --inh-caps=-all --no-new-privs -- "$real" "$@"
