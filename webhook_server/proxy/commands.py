"""``webhook-server render-nginx`` and ``webhook-server reload-proxy`` (registered by ``cli``).

Every error is one of the project's (``webhook_server.errors``, ``ReloadError``): the CLI prints it as one
``webhook-server:`` line with exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click
from pydantic import ValidationError

from webhook_server.errors import ConfigError
from webhook_server.problems import dotted, problems
from webhook_server.proxy import reload as reloading
from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.render import render_nginx_conf
from webhook_server.rules import load_rules

log = logging.getLogger(__name__)


def load_proxy_config(rules_path: Path) -> ProxyConfig:
    proxy = load_rules(rules_path).proxy
    if proxy is None:
        raise ConfigError(f"{rules_path}: no proxy: section; see nginx/README.md for an example")
    return proxy


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so nginx (or nginx -t) never reads half a file."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


rules_option = click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="WEBHOOK_RULES",
    default="deploy_rules.yaml",
    show_default=True,
    help="deploy_rules.yaml with a proxy: section (env WEBHOOK_RULES).",
)


@click.command("render-nginx")
@rules_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write nginx.conf here (replaced atomically) instead of printing it.",
)
@click.option("--nginx-version", help="Render for this nginx (overrides proxy.nginx_version).")
@click.option(
    "--openssl-version",
    help="Render for nginx built with this OpenSSL (overrides proxy.openssl_version).",
)
@click.option(
    "--acme-only",
    is_flag=True,
    help="Only port 80 (ACME webroot and redirects): to obtain the first certificates before any exist.",
)
def render_nginx(
    rules_path: Path,
    out: Path | None,
    nginx_version: str | None,
    openssl_version: str | None,
    acme_only: bool,
) -> None:
    """Render nginx.conf from the proxy: section of the rules file."""
    config = load_proxy_config(rules_path)
    try:
        config = config.with_versions(nginx=nginx_version, openssl=openssl_version)
    except ValidationError as e:
        # The rules file passed this validation already, so the culprit is an option: name it as typed.
        loc, text = problems(e)[0]
        raise ConfigError(f"--{dotted(loc).replace('_', '-')}: {text}" if loc else text) from None
    text = render_nginx_conf(config, acme_only=acme_only)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        write_atomically(out, text)
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror}") from None
    log.info("wrote %s", out)


@click.command("reload-proxy")
@click.option(
    "--service",
    envvar="WEBHOOK_PROXY_SERVICE",
    default="nginx",
    show_default=True,
    help="The nginx Swarm service (env WEBHOOK_PROXY_SERVICE).",
)
@click.option(
    "--mode",
    type=click.Choice(["signal", "secrets"]),
    default="signal",
    show_default=True,
    help="signal: nginx -t, then SIGHUP (certificates bind-mounted). secrets: new versioned Swarm secrets.",
)
@rules_option
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="/etc/letsencrypt/live",
    show_default=True,
    help="secrets mode: where the lineages' fullchain.pem and privkey.pem are on this host.",
)
@click.option("--docker-host", envvar="DOCKER_HOST", default=None, help="Docker daemon (env DOCKER_HOST).")
@click.option(
    "--job-image",
    envvar="WEBHOOK_PROXY_JOB_IMAGE",
    default=None,
    help="signal mode: reload nginx on other nodes with a one-off job of this image (this project's image) "
    "on each, instead of a forced rolling update (env WEBHOOK_PROXY_JOB_IMAGE).",
)
@click.option(
    "--node-socket",
    envvar="WEBHOOK_PROXY_NODE_SOCKET",
    default="/var/run/docker.sock",
    show_default=True,
    help="Where each node's Docker socket is, for the job (Swarm templates such as {{.Node.Hostname}} work).",
)
@click.option("--this-node-only", is_flag=True, help="Only the nginx tasks on this node (what a node job runs).")
@click.option("--check-only", is_flag=True, help="With --this-node-only: run nginx -t, reload nothing.")
def reload_proxy(
    service: str,
    mode: str,
    rules_path: Path,
    cert_dir: Path,
    docker_host: str | None,
    job_image: str | None,
    node_socket: str,
    this_node_only: bool,
    check_only: bool,
) -> None:
    """Make nginx load new certificates and config: validate, then reload without dropping connections."""
    # Imported here: only this command needs the Docker adapter (and docker-py).
    from webhook_server.swarm.proxy import SwarmProxy

    if check_only and not this_node_only:
        raise ConfigError("--check-only works with --this-node-only (what a node job runs)")
    config = load_proxy_config(rules_path) if mode == "secrets" else None
    job = reloading.NodeJob(image=job_image, socket=node_socket) if job_image else None
    swarm = SwarmProxy(docker_host)
    try:
        if this_node_only:
            report = reloading.reload_this_node(swarm, service, check_only=check_only)
        else:
            report = reloading.reload_proxy(
                swarm,
                service,
                mode="secrets" if mode == "secrets" else "signal",
                config=config,
                cert_dir=cert_dir,
                job=job,
            )
    finally:
        swarm.close()
    click.echo(report.summary(service))
