"""The proxy: section: what it accepts, and that no value can smuggle nginx syntax into the template."""

from __future__ import annotations

import copy
import ipaddress
import itertools
import re
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from webhook_server.errors import RulesError
from webhook_server.proxy import config as proxy_config
from webhook_server.proxy.config import ProxyConfig, ResolverAddress, parse_version
from webhook_server.rules import parse_rules

BASE: dict[str, Any] = {
    "webhook": {"server_name": "hooks.example.com", "upstream": {"host": "webhook", "port": 8000}},
    "sites": [{"server_names": ["example.com", "www.example.com"], "upstream": {"host": "a3_web", "port": 80}}],
}


def config(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def with_value(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """BASE with ``value`` at ``path``; missing dicts and list items on the way are created."""
    data: dict[str, Any] = copy.deepcopy(BASE)
    node: Any = data
    for key, nxt in itertools.pairwise(path):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(node, list):
            assert isinstance(key, int)
            while len(node) <= key:
                node.append(copy.deepcopy(empty))
        else:
            node.setdefault(key, empty)
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        assert isinstance(last, int)
        while len(node) <= last:
            node.append(None)
    node[last] = value
    return data


def test_defaults() -> None:
    cfg = ProxyConfig.model_validate(BASE)
    assert cfg.nginx_version == (1, 22, 0)
    assert cfg.openssl_version == (3, 0, 0)
    assert [str(r) for r in cfg.resolvers] == ["127.0.0.11"]
    assert cfg.listen.sockets(80) == ["80"]
    assert cfg.webhook.lineage == "hooks.example.com"
    assert cfg.sites[0].lineage == "example.com"
    assert cfg.server_names == ["hooks.example.com", "example.com", "www.example.com"]
    assert cfg.webhook.timeouts.read == timedelta(seconds=30)
    assert cfg.logs.access == "/dev/stdout" and cfg.logs.error == "stderr"


def test_shorthands_and_normalisation() -> None:
    cfg = ProxyConfig.model_validate(
        config(
            resolvers="127.0.0.1:8053",
            sites=[{"server_names": "WWW.Example.COM", "upstream": {"host": "web", "port": 80}}],
            listen={"addresses": ["*", "::1", "192.0.2.1"]},
        )
    )
    assert cfg.sites[0].server_names == ("www.example.com",)
    assert str(cfg.resolvers[0]) == "127.0.0.1:8053"
    assert cfg.listen.sockets(443) == ["443", "[::1]:443", "192.0.2.1:443"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.11", "127.0.0.11"), ("127.0.0.1:53", "127.0.0.1"), ("[::1]:5353", "[::1]:5353"), ("::1", "[::1]")],
)
def test_resolver_addresses(text: str, expected: str) -> None:
    assert str(ResolverAddress.model_validate(text)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.22", (1, 22, 0)), ("1.25.1", (1, 25, 1)), ("3", (3, 0, 0)), (3, (3, 0, 0)), ([1, 27], (1, 27, 0))],
)
def test_versions(value: Any, expected: tuple[int, int, int]) -> None:
    assert parse_version(value) == expected


def test_a_yaml_float_version_is_refused_not_misread() -> None:
    with pytest.raises(ValidationError, match="quoted string"):
        ProxyConfig.model_validate(config(nginx_version=1.20))


def test_round_trip() -> None:
    cfg = ProxyConfig.model_validate(
        config(nginx_version="1.27.1", real_ip_from=["10.0.0.0/8"], resolvers=["[::1]:53", "127.0.0.11"])
    )
    assert ProxyConfig.model_validate(cfg.model_dump()) == cfg
    assert cfg.with_versions(openssl="3.5").openssl_version == (3, 5, 0)
    assert cfg.with_versions().nginx_version == (1, 27, 1)


# Every field that reaches the template, with values that would end a directive, open or close a block,
# quote, expand a variable, start a comment, or break the line if they were written as they are.
INJECTIONS = [
    "x;",
    "x; include /etc/passwd",
    "x }",
    "x{",
    "}",
    "x\n",
    "x\nuser root",
    "x y",
    "x\ty",
    '"x"',
    "'x'",
    "$x",
    "x#c",
    "x\\y",
    "",
]
STRING_FIELDS: list[tuple[str | int, ...]] = [
    ("webhook", "server_name"),
    ("webhook", "certificate"),
    ("webhook", "upstream", "host"),
    ("webhook", "rate"),
    ("webhook", "max_body_size"),
    ("webhook", "zone_size"),
    ("sites", 0, "server_names", 0),
    ("sites", 0, "upstream", "host"),
    ("sites", 0, "certificate"),
    ("sites", 0, "max_body_size"),
    ("paths", "acme_webroot"),
    ("paths", "certificates"),
    ("paths", "pid"),
    ("paths", "temp"),
    ("logs", "access"),
    ("logs", "error"),
    ("logs", "error_level"),
    ("user",),
    ("nginx_version",),
    ("openssl_version",),
    ("resolvers", 0),
    ("resolver_valid",),
    ("listen", "addresses", 0),
    ("real_ip_from", 0),
    ("webhook", "api_allow", 0),
    ("webhook", "timeouts", "read"),
]


@pytest.mark.parametrize("payload", INJECTIONS, ids=repr)
@pytest.mark.parametrize("path", STRING_FIELDS, ids=lambda p: ".".join(map(str, p)))
def test_injection_is_rejected(path: tuple[str | int, ...], payload: str) -> None:
    data = with_value(path, payload)
    with pytest.raises(ValidationError) as info:
        ProxyConfig.model_validate(data)
    # The error names the attacked field (pydantic adds union branch names such as "literal['off']").
    locs = [tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p)) for err in info.value.errors()]
    assert any(loc[: len(path)] == path for loc in locs), locs


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("webhook", "server_name"), "*.example.com"),  # http-01 cannot validate wildcards
        (("webhook", "server_name"), "exämple.com"),
        (("webhook", "server_name"), "-a.example.com"),
        (("webhook", "server_name"), "a" * 64 + ".com"),
        (("webhook", "upstream", "port"), 0),
        (("webhook", "upstream", "port"), 65536),
        (("webhook", "rate"), "10r/h"),
        (("webhook", "rate"), "0r/s"),
        (("webhook", "burst"), -1),
        (("webhook", "max_body_size"), "0"),
        (("webhook", "max_body_size"), "1g"),
        (("webhook", "timeouts", "connect"), "0s"),
        (("webhook", "certificate"), "../other"),
        (("webhook", "certificate"), "a/b"),
        (("paths", "acme_webroot"), "relative/path"),
        (("paths", "acme_webroot"), "/srv/../etc"),
        (("paths", "pid"), "/run/./nginx.pid"),
        (("logs", "access"), "stdout"),
        (("logs", "error"), "off"),
        (("user",), "Root"),
        (("nginx_version",), "1.18"),  # below the template's minimum (ssl_reject_handshake)
        (("openssl_version",), "1.1.0"),
        (("resolvers", 0), "dns.example.com"),
        (("resolvers", 0), "127.0.0.1:x"),
        (("listen", "http_port"), 443),  # same as https_port
        (("resolver_valid",), "0s"),
        (("webhook", "unknown"), 1),
        (("sites", 0, "server_names"), []),
    ],
)
def test_other_invalid_values(path: tuple[str | int, ...], value: Any) -> None:
    with pytest.raises(ValidationError):
        ProxyConfig.model_validate(with_value(path, value))


def test_each_server_name_belongs_to_one_site() -> None:
    data = config(sites=[*BASE["sites"], {"server_names": ["Hooks.example.com"], "upstream": {"host": "x", "port": 1}}])
    with pytest.raises(ValidationError, match=r"'hooks\.example\.com' appears twice"):
        ProxyConfig.model_validate(data)


def test_networks_are_parsed() -> None:
    cfg = ProxyConfig.model_validate(config(real_ip_from=["10.0.0.0/8", "2001:db8::/32"]))
    assert cfg.real_ip_from == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


# ---- through deploy_rules.yaml ------------------------------------------------------------------------

RULES = """\
services:
  web:
    repository: acme/web
    tags: latest
"""


def test_rules_file_without_proxy_section() -> None:
    assert parse_rules(RULES).proxy is None


def test_rules_file_carries_the_proxy_section() -> None:
    text = RULES + "proxy:\n  webhook:\n    server_name: hooks.example.com\n    upstream: {host: w, port: 8000}\n"
    rules = parse_rules(text)
    assert rules.proxy is not None
    assert rules.proxy.webhook.server_name == "hooks.example.com"
    assert rules.get("web") is not None


def test_rules_errors_are_located() -> None:
    text = RULES + (
        "proxy:\n"
        "  webhook:\n"
        "    server_name: 'hooks.example.com;'\n"
        "    upstream: {host: w, port: 8000}\n"
        "  sites:\n"
        "    - server_names: [ok.example.com]\n"
        "      upstream: {host: 'web }', port: 80}\n"
    )
    with pytest.raises(RulesError) as info:
        parse_rules(text, source="deploy_rules.yaml")
    assert info.value.problems == [
        "line 7: proxy.webhook.server_name: 'hooks.example.com;' is not a valid domain name "
        "(letters, digits, '-' and '.')",
        "line 11: proxy.sites.0.upstream.host: 'web }' is not a valid Swarm service name or IPv4 address",
    ]


# Values the field patterns once let through and the renderer then refused (a traceback from render-nginx
# after check-rules said OK) or wrote differently (a sub-millisecond timeout became "0ms"). Each is now
# refused by the rules' own validation, with its line.
RENDER_REFUSED = [
    ("listen: {addresses: ['fe80::1%eth0']}", "line 10: proxy.listen.addresses.0: must be '*'; 'fe80::1%eth0' "
     "cannot be written into nginx.conf (nginx takes no IPv6 zone index such as %eth0)"),
    ("resolvers: '[fe80::1%eth0]:53'", "line 10: proxy.resolvers.0.address: 'fe80::1%eth0' cannot be written "
     "into nginx.conf (nginx takes no IPv6 zone index such as %eth0)"),
    ("real_ip_from: ['fe80::%eth0/64']", "line 10: proxy.real_ip_from.0: 'fe80::%eth0/64' cannot be written "
     "into nginx.conf (nginx takes no IPv6 zone index such as %eth0)"),
    ("resolver_valid: 1.0005s", "line 10: proxy.resolver_valid: must be a whole number of milliseconds"),
    ("sites: [{server_names: [a.example.com], upstream: {host: w, port: 1}, timeouts: {read: 0.0001}}]",
     "line 10: proxy.sites.0.timeouts.read: must be a whole number of milliseconds"),
]  # fmt: skip


@pytest.mark.parametrize(("entry", "problem"), RENDER_REFUSED, ids=[e for e, _ in RENDER_REFUSED])
def test_check_rules_refuses_what_the_renderer_would(entry: str, problem: str) -> None:
    text = RULES + (
        "proxy:\n"
        "  webhook:\n"
        "    server_name: hooks.example.com\n"
        "    upstream: {host: w, port: 8000}\n"
        "    api_allow: ['10.0.0.0/8']\n"
        f"  {entry}\n"
    )
    with pytest.raises(RulesError) as info:
        parse_rules(text, source="deploy_rules.yaml")
    assert info.value.problems == [problem]


def test_api_allow_zone_index_is_refused_with_its_line() -> None:
    text = RULES + (
        "proxy:\n"
        "  webhook:\n"
        "    server_name: hooks.example.com\n"
        "    upstream: {host: w, port: 8000}\n"
        "    api_allow: ['fe80::1%x']\n"
    )
    with pytest.raises(RulesError) as info:
        parse_rules(text, source="deploy_rules.yaml")
    assert info.value.problems == [
        "line 9: proxy.webhook.api_allow.0: 'fe80::1%x/128' cannot be written into nginx.conf "
        "(nginx takes no IPv6 zone index such as %eth0)"
    ]


def test_validation_runs_the_renderers_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the renderer refuses, validation refuses, even a value no field pattern thought of: here the
    renderer is made to refuse 'example', which every field's own pattern accepts."""
    monkeypatch.setattr(proxy_config, "NGINX_WORD", re.compile(r"^(?!.*example)[A-Za-z0-9._:/@+=,\[\]*-]+$"))
    with pytest.raises(RulesError) as info:
        parse_rules(
            RULES + "proxy:\n  webhook:\n    server_name: hooks.example.com\n    upstream: {host: w, port: 1}\n"
        )
    assert info.value.problems == ["line 5: proxy: 'hooks.example.com' cannot be written into nginx.conf"]
