"""The ``proxy:`` section of deploy_rules.yaml: what nginx fronts, on which ports, with which certificates.

Every value that reaches the nginx template passes a strict pattern here (an allow-list of characters, never
a deny-list), so nothing written in the rules file can end a directive, open a block, quote a string or
expand a variable: no ``;``, braces, quotes, whitespace, newlines or ``$``. The renderer checks again, with
:data:`NGINX_WORD`; validation renders the config too, so what the renderer would refuse is refused here,
where check-rules reports it with its line.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    PlainSerializer,
    model_validator,
)

from webhook_server.durations import Duration

_FROZEN = ConfigDict(frozen=True, extra="forbid")

# RFC 1123 host names, lowercase (nginx matches server names case-insensitively; we store one spelling).
DOMAIN_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
# A site may also be ``*.example.com``: one label, leftmost, as TLS wildcards are (RFC 6125). Only DNS-01
# can validate such a certificate, so a wildcard site needs a lineage (``certificates:``) that covers it.
WILDCARD_NAME = re.compile(
    r"^\*\.(?=.{1,251}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
SERVER_NAME = re.compile(f"{DOMAIN_NAME.pattern}|{WILDCARD_NAME.pattern}")
# A Swarm service name as Docker's DNS knows it (``web``, ``a3_web``, ``tasks.web``) or an IPv4 literal.
UPSTREAM_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,252})$")
# certbot's lineage directory names: the first domain, maybe with a ``-0001`` suffix. No slashes.
LINEAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Absolute paths of plain characters; ``..`` segments are refused separately.
ABSOLUTE_PATH = re.compile(r"^/(?:[A-Za-z0-9._@+=,-]+/?)*$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# nginx sizes: bytes, or k/m suffixed ("512k", "1m").
SIZE = re.compile(r"^[1-9][0-9]{0,9}[kKmM]?$")
# limit_req_zone rates: requests per second or per minute.
RATE = re.compile(r"^[1-9][0-9]{0,6}r/[sm]$")
# Everything a value written into nginx.conf may contain. Quotes, ';', braces, '$', '#', '\\', '%' and
# whitespace are out, so no value can close a directive, open a block, start a comment or expand a variable.
NGINX_WORD = re.compile(r"^[A-Za-z0-9._:/@+=,\[\]*-]+$")
VERSION = re.compile(r"^(\d{1,4})(?:\.(\d{1,4}))?(?:\.(\d{1,4}))?$")

# Oldest versions the template is written for.
MIN_NGINX = (1, 19, 4)
MIN_OPENSSL = (1, 1, 1)

Version = tuple[int, int, int]


def parse_version(value: Any) -> Version:
    """``"1.22"`` → (1, 22, 0). Accepts a tuple/list of ints too (a model round trip)."""
    if isinstance(value, tuple | list) and all(isinstance(p, int) and not isinstance(p, bool) for p in value):
        parts = [*value, 0, 0, 0][:3]
        return (parts[0], parts[1], parts[2])
    if isinstance(value, float):
        # YAML reads 1.20 as the number 1.2: the version the user meant is already lost.
        raise ValueError(f"write the version as a quoted string (YAML reads {value!r} as a number)")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not (match := VERSION.fullmatch(value.strip())):
        raise ValueError(f"{value!r} is not a version: use forms like 1.22 or 3.0.13")
    major, minor, patch = (int(p) if p else 0 for p in match.groups())
    return (major, minor, patch)


def format_version(value: Version) -> str:
    return ".".join(str(p) for p in value)


VersionField = Annotated[Version, BeforeValidator(parse_version), PlainSerializer(format_version, return_type=str)]


def _at_least(minimum: Version, what: str) -> AfterValidator:
    def check(value: Version) -> Version:
        if value < minimum:
            raise ValueError(f"the template needs {what} {format_version(minimum)} or newer")
        return value

    return AfterValidator(check)


# ssl_reject_handshake needs nginx 1.19.4, TLS 1.3 OpenSSL 1.1.1.
NginxVersion = Annotated[VersionField, _at_least(MIN_NGINX, "nginx")]
OpenSSLVersion = Annotated[VersionField, _at_least(MIN_OPENSSL, "OpenSSL")]


def nginx_word(text: str) -> str:
    """``text`` if it can be written into nginx.conf as one word, else ValueError."""
    if not NGINX_WORD.fullmatch(text):
        hint = " (nginx takes no IPv6 zone index such as %eth0)" if "%" in text else ""
        raise ValueError(f"{text!r} cannot be written into nginx.conf{hint}")
    return text


_Writable = TypeVar("_Writable")


def _writable(value: _Writable) -> _Writable:
    nginx_word(str(value))
    return value


_Items = TypeVar("_Items", bound=tuple[Any, ...])


def _not_empty(value: _Items) -> _Items:
    # Not Field(min_length=1): pydantic also reports that for a list whose one item is invalid.
    if not value:
        raise ValueError("needs at least one entry")
    return value


NotEmpty = AfterValidator(_not_empty)

# Python's ipaddress takes IPv6 zone indexes ("fe80::1%eth0", any characters after the %): not nginx.
Address = Annotated[IPvAnyAddress, AfterValidator(_writable)]
Network = Annotated[IPvAnyNetwork, AfterValidator(_writable)]


def _matching(pattern: re.Pattern[str], what: str, *, lower: bool = False) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            if lower:
                value = value.lower()
            if not pattern.fullmatch(value):
                raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return BeforeValidator(check)


def _no_dot_segments(value: str) -> str:
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{value!r}: '.' and '..' segments are not allowed")
    return value


def _size(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


DomainName = Annotated[str, _matching(DOMAIN_NAME, "domain name (letters, digits, '-' and '.')", lower=True)]
ServerName = Annotated[
    str, _matching(SERVER_NAME, "server name (a domain name, or *.domain for a wildcard)", lower=True)
]
UpstreamHost = Annotated[str, _matching(UPSTREAM_HOST, "Swarm service name or IPv4 address")]
LineageName = Annotated[str, _matching(LINEAGE_NAME, "certificate lineage name")]
AbsolutePath = Annotated[
    str,
    _matching(ABSOLUTE_PATH, "absolute path (letters, digits and ._@+=,- only)"),
    BeforeValidator(lambda v: _no_dot_segments(v) if isinstance(v, str) else v),
]
UserName = Annotated[str, _matching(USER_NAME, "user name")]
Size = Annotated[str, BeforeValidator(_size), _matching(SIZE, "size (bytes, or a number with k or m)")]
Rate = Annotated[str, _matching(RATE, "rate (like 10r/s or 30r/m)")]
Port = Annotated[int, Field(ge=1, le=65535)]


def _nginx_time(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    if value.microseconds % 1000:
        # nginx counts in milliseconds: 0.0001s would be written as 0ms.
        raise ValueError("must be a whole number of milliseconds")
    return value


NginxTime = Annotated[Duration, AfterValidator(_nginx_time)]


class ResolverAddress(BaseModel):
    """A DNS server nginx asks at request time; written ``127.0.0.11`` or ``127.0.0.1:8053``."""

    model_config = _FROZEN

    address: Address
    port: Port = 53

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        host, port = text, "53"
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.removeprefix(":") or "53"
        elif text.count(":") == 1:
            host, port = text.split(":")
        if not port.isdigit():
            raise ValueError(f"{value!r} is not an address or address:port")
        return {"address": host, "port": int(port)}

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return host if self.port == 53 else f"{host}:{self.port}"


class Listen(BaseModel):
    model_config = _FROZEN

    # "*" listens on every IPv4 address; add "::" for IPv6.
    addresses: Annotated[tuple[Literal["*"] | Address, ...], NotEmpty] = ("*",)
    http_port: Port = 80
    https_port: Port = 443
    # The port clients reach HTTPS on, for the http → https redirect; differs from https_port behind a
    # port mapping (Swarm's ingress publishing 443 to a container's 8443, say).
    redirect_https_port: Port = 443

    def sockets(self, port: int) -> list[str]:
        out = []
        for address in self.addresses:
            if address == "*":
                out.append(str(port))
            elif address.version == 6:
                out.append(f"[{address}]:{port}")
            else:
                out.append(f"{address}:{port}")
        return out

    @model_validator(mode="after")
    def _distinct_ports(self) -> Listen:
        if self.http_port == self.https_port:
            raise ValueError("http_port and https_port must differ")
        return self


class Paths(BaseModel):
    model_config = _FROZEN

    # certbot --webroot -w writes challenges below this; nginx serves /.well-known/acme-challenge/ from it.
    acme_webroot: AbsolutePath = "/var/www/acme"
    # Lineage directories: {certificates}/{lineage}/fullchain.pem and privkey.pem (certbot's live/ layout).
    certificates: AbsolutePath = "/etc/letsencrypt/live"
    pid: AbsolutePath = "/run/nginx.pid"
    # One directory for every *_temp_path; None keeps nginx's compiled-in paths (they need root to create).
    temp: AbsolutePath | None = None


class Logs(BaseModel):
    model_config = _FROZEN

    # In a container, stdout/stderr end up in `docker service logs`.
    access: AbsolutePath | Literal["off"] = "/dev/stdout"
    error: AbsolutePath | Literal["stderr"] = "stderr"
    error_level: Literal["debug", "info", "notice", "warn", "error", "crit"] = "error"


class Timeouts(BaseModel):
    model_config = _FROZEN

    connect: NginxTime = timedelta(seconds=5)
    send: NginxTime = timedelta(seconds=60)
    read: NginxTime = timedelta(seconds=60)


class Upstream(BaseModel):
    """Where requests go: resolved through the resolver at request time, so nginx starts before it exists."""

    model_config = _FROZEN

    host: UpstreamHost
    port: Port

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Site(BaseModel):
    """One web service of the swarm behind nginx."""

    model_config = _FROZEN

    server_names: Annotated[tuple[ServerName, ...], NotEmpty]
    upstream: Upstream
    # certbot lineage; defaults to the lineage of proxy.certificates that covers each name, else to the first
    # server name, as certbot names it.
    certificate: LineageName | None = None
    max_body_size: Size = "10m"
    timeouts: Timeouts = Timeouts()

    @model_validator(mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("server_names"), str):
            return {**value, "server_names": (value["server_names"],)}
        return value

    @property
    def lineage(self) -> str:
        return self.certificate or self.server_names[0]


class Webhook(BaseModel):
    """The receiver itself: Docker Hub's POSTs, the bearer-token API and the health endpoints."""

    model_config = _FROZEN

    server_name: DomainName
    upstream: Upstream
    certificate: LineageName | None = None
    # Docker Hub's payload is a few kilobytes; the app refuses bodies over WEBHOOK_MAX_BODY_BYTES too.
    max_body_size: Size = "1m"
    # Per client address, for /hooks/ and /api/ (where tokens could be guessed).
    rate: Rate = "30r/m"
    burst: int = Field(default=20, ge=0, le=100000)
    zone_size: Size = "10m"
    # The receiver only journals a push before answering 202, so a slow answer means trouble.
    timeouts: Timeouts = Timeouts(connect=timedelta(seconds=5), send=timedelta(seconds=30), read=timedelta(seconds=30))
    # Who may reach /api/ at all; empty lets everyone try (the API still needs its bearer token).
    api_allow: tuple[Network, ...] = ()

    @property
    def lineage(self) -> str:
        return self.certificate or self.server_name


class ProxyConfig(BaseModel):
    """The ``proxy:`` section. ``nginx_version`` and ``openssl_version`` choose version-dependent syntax."""

    model_config = _FROZEN

    # Debian bookworm's versions: the template output for them also works on newer ones.
    nginx_version: NginxVersion = (1, 22, 0)
    openssl_version: OpenSSLVersion = (3, 0, 0)
    # The account workers run as when the master starts as root; None keeps nginx's compiled-in default.
    user: UserName | None = None
    # Docker's embedded DNS, reachable from any container on a user-defined or overlay network.
    resolvers: Annotated[tuple[ResolverAddress, ...], NotEmpty] = (ResolverAddress.model_validate("127.0.0.11"),)
    resolver_valid: NginxTime = timedelta(seconds=10)
    listen: Listen = Listen()
    paths: Paths = Paths()
    logs: Logs = Logs()
    # Load balancers in front of nginx whose X-Forwarded-For names the real client.
    real_ip_from: tuple[Network, ...] = ()
    webhook: Webhook
    sites: tuple[Site, ...] = ()
    # certbot lineages and the names each certificate holds (``example.com: [example.com, "*.example.com"]``).
    # When given, every server name must be covered by one, and each name is served with the lineage that
    # covers it (an exact name before a wildcard): one wildcard certificate may serve many sites.
    certificates: dict[LineageName, Annotated[tuple[ServerName, ...], NotEmpty]] = {}

    @model_validator(mode="before")
    @classmethod
    def _one_resolver(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("resolvers"), str):
            return {**value, "resolvers": (value["resolvers"],)}
        return value

    @model_validator(mode="after")
    def _checks(self) -> ProxyConfig:
        seen: set[str] = set()
        for name in self.server_names:
            if name in seen:
                raise ValueError(f"server name {name!r} appears twice; each name belongs to one site")
            seen.add(name)
        # Imported here: lineages imports this module for the models.
        from webhook_server.proxy.lineages import check_coverage

        check_coverage(self)
        # Imported here because render imports this module. Its UnsafeValue is a ValueError, which pydantic
        # reports like any other: a value the renderer refuses fails validation, never render-nginx alone.
        from webhook_server.proxy.render import render_nginx_conf

        for acme_only in (False, True):
            render_nginx_conf(self, acme_only=acme_only)
        return self

    def tls_servers(self) -> list[tuple[Site, str, tuple[str, ...]]]:
        """(site, lineage, names): one nginx server block per site and certificate, in the file's order."""
        from webhook_server.proxy.lineages import site_groups

        return [(site, lineage, names) for site in self.sites for lineage, names in site_groups(self, site)]

    @property
    def webhook_lineage(self) -> str:
        from webhook_server.proxy.lineages import webhook_lineage

        return webhook_lineage(self)

    def lineages(self) -> list[str]:
        """Every lineage nginx.conf reads, sorted: what reload-proxy's secrets mode and the expiry watch read."""
        return sorted({self.webhook_lineage, *(lineage for _, lineage, _ in self.tls_servers())})

    @property
    def server_names(self) -> list[str]:
        """Every name nginx answers for, the receiver's first."""
        return [self.webhook.server_name, *(n for site in self.sites for n in site.server_names)]

    def with_versions(self, *, nginx: str | None = None, openssl: str | None = None) -> ProxyConfig:
        """A copy for other versions (the CLI's --nginx-version/--openssl-version), validated again."""
        data = self.model_dump()
        if nginx is not None:
            data["nginx_version"] = nginx
        if openssl is not None:
            data["openssl_version"] = openssl
        return ProxyConfig.model_validate(data)
