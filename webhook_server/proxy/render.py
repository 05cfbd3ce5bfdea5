"""Render nginx.conf from a :class:`ProxyConfig`.

Version-dependent choices are made here, in Python, so the template only reads booleans and strings and
the choices are unit-testable on their own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jinja2
import markupsafe

from webhook_server.proxy.config import ProxyConfig, Version, format_version, nginx_word

# ``http2 on;`` replaced ``listen ... http2`` in 1.25.1; older versions do not know the directive.
HTTP2_DIRECTIVE_SINCE: Version = (1, 25, 1)
# OpenSSL 3.5 brought the hybrid post-quantum group; older versions fail ``nginx -t`` on its name.
MLKEM_SINCE: Version = (3, 5, 0)
CLASSIC_CURVES = "X25519:prime256v1:secp384r1"
HYBRID_CURVES = "X25519MLKEM768:" + CLASSIC_CURVES

_TEMPLATE = "nginx.conf.j2"


class UnsafeValue(ValueError):
    """A value reached the template that could change nginx's syntax; validation should have caught it."""


def http2_directive(nginx_version: Version) -> bool:
    return nginx_version >= HTTP2_DIRECTIVE_SINCE


def ecdh_curves(openssl_version: Version) -> str:
    return HYBRID_CURVES if openssl_version >= MLKEM_SINCE else CLASSIC_CURVES


def nginx_time(value: timedelta) -> str:
    """A timedelta in nginx's notation: whole seconds as ``5s``, anything finer in ``ms``."""
    millis = round(value.total_seconds() * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _finalize(value: Any) -> str:
    if isinstance(value, markupsafe.Markup):
        # A macro's output (marked ``| safe`` in the template): each value inside it passed through here.
        return str(value)
    if value is None:
        raise UnsafeValue("None cannot be written into nginx.conf")
    try:
        return nginx_word(str(value))
    except ValueError as e:
        raise UnsafeValue(str(e)) from None


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("webhook_server.proxy", "templates"),
        undefined=jinja2.StrictUndefined,
        # nginx.conf is not HTML; values are made safe by validation and _finalize instead.
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    env.filters["nginx_time"] = nginx_time
    env.filters["version"] = format_version
    return env


_ENV = _environment()


def render_nginx_conf(config: ProxyConfig, *, acme_only: bool = False) -> str:
    """The complete nginx.conf. ``acme_only`` leaves out TLS: for the first certificate, before any exists."""
    listen = config.listen
    redirect_port = "" if listen.redirect_https_port == 443 else f":{listen.redirect_https_port}"
    return _ENV.get_template(_TEMPLATE).render(
        cfg=config,
        acme_only=acme_only,
        http2_directive=http2_directive(config.nginx_version),
        curves=ecdh_curves(config.openssl_version),
        http_sockets=listen.sockets(listen.http_port),
        https_sockets=listen.sockets(listen.https_port),
        redirect_port=redirect_port,
    )
