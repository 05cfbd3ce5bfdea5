"""``webhook-server render-nginx`` and ``webhook-server reload-proxy`` (registered by ``cli``).

A user's mistake (a bad rules file, no ``proxy:`` section, an unwritable output) ends as one ``webhook-server:``
message and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any

import click
from pydantic import ValidationError

from webhook_server.errors import DockerError, ServiceNotFound, WebhookError
from webhook_server.proxy import reload as reloading
from webhook_server.proxy.config import ProxyConfig, parse_version
from webhook_server.proxy.render import render_nginx_conf
from webhook_server.rules import load_rules

log = logging.getLogger(__name__)

USER_ERROR = 2


class UserError(click.ClickException):
    exit_code = USER_ERROR

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"webhook-server: {self.format_message()}", file=file, err=file is None)


class Failure(UserError):
    """Not a mistake in the command but the system's state (nginx -t failed, Docker unreachable): exit 1."""

    exit_code = 1


def _check_version(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_version(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


def load_proxy_config(rules_path: Path) -> ProxyConfig:
    try:
        rules = load_rules(rules_path)
    except WebhookError as e:
        raise UserError(e.message) from None
    if rules.proxy is None:
        raise UserError(f"{rules_path}: no proxy: section; see nginx/README.md for an example")
    return rules.proxy


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
@click.option("--nginx-version", callback=_check_version, help="Render for this nginx (overrides proxy.nginx_version).")
@click.option(
    "--openssl-version",
    callback=_check_version,
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
        # with_versions re-validates; a version below the template's minimum lands here.
        messages = (str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        raise UserError("; ".join(messages)) from None
    text = render_nginx_conf(config, acme_only=acme_only)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        write_atomically(out, text)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
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
def reload_proxy(service: str, mode: str, rules_path: Path, cert_dir: Path, docker_host: str | None) -> None:
    """Make nginx load new certificates and config: validate, then reload without dropping connections."""
    # Imported here: only this command needs the Docker adapter (and docker-py).
    from webhook_server.swarm.proxy import SwarmProxy

    config = load_proxy_config(rules_path) if mode == "secrets" else None
    swarm = SwarmProxy(docker_host)
    try:
        report = reloading.reload_proxy(
            swarm, service, mode="secrets" if mode == "secrets" else "signal", config=config, cert_dir=cert_dir
        )
    except ServiceNotFound as e:
        raise UserError(e.message) from None
    except (reloading.ReloadError, DockerError) as e:
        raise Failure(e.message) from None
    finally:
        swarm.close()
    click.echo(report.summary(service))
