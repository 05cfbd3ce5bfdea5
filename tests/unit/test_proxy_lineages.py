"""Wildcards and lineages: which certificate serves which name, and what check-rules refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.lineages import certificate_lines, covers, lineage_for
from webhook_server.proxy.render import render_nginx_conf


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("example.com", "example.com", True),
        ("example.com", "www.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "*.example.com", True),  # a wildcard site, served by the wildcard certificate
        ("*.example.com", "example.com", False),  # the apex needs its own name in the certificate
        ("*.example.com", "a.b.example.com", False),  # one label only, as TLS clients check
        ("*.example.com", "a.example.org", False),
        ("*.example.com", "aexample.com", False),
        ("*.b.example.com", "a.b.example.com", True),
        ("a.example.com", "*.example.com", False),
    ],
)
def test_covers(pattern: str, name: str, expected: bool) -> None:
    assert covers(pattern, name) is expected


CERTS = {
    "example.com": ("example.com", "*.example.com"),
    "shop.example.com": ("shop.example.com",),
    "other.org": ("*.other.org",),
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.com", "example.com"),
        ("www.example.com", "example.com"),
        ("*.example.com", "example.com"),
        ("shop.example.com", "shop.example.com"),  # the exact name wins over the wildcard
        ("a.other.org", "other.org"),
        ("other.org", None),
        ("a.b.example.com", None),
    ],
)
def test_lineage_for(name: str, expected: str | None) -> None:
    assert lineage_for(name, CERTS) == expected


def test_the_first_declared_lineage_wins_between_equals() -> None:
    assert lineage_for("a.x.com", {"one": ("*.x.com",), "two": ("*.x.com",)}) == "one"


def proxy(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "webhook": {"server_name": "hooks.example.com", "upstream": {"host": "webhook", "port": 9000}},
        "sites": [
            {"server_names": ["*.example.com"], "upstream": {"host": "web", "port": 80}},
            {"server_names": ["example.com", "shop.example.com"], "upstream": {"host": "shop", "port": 80}},
        ],
        "certificates": {k: list(v) for k, v in CERTS.items()},
    }
    data.update(changes)
    return data


def test_each_name_is_served_with_its_lineage() -> None:
    cfg = ProxyConfig.model_validate(proxy())
    assert cfg.webhook_lineage == "example.com"
    assert [(lineage, names) for _, lineage, names in cfg.tls_servers()] == [
        ("example.com", ("*.example.com",)),
        ("example.com", ("example.com",)),  # one site, two certificates: two server blocks
        ("shop.example.com", ("shop.example.com",)),
    ]
    assert cfg.lineages() == ["example.com", "shop.example.com"]
    conf = render_nginx_conf(cfg)
    assert (
        "server_name *.example.com;\n\n        ssl_certificate /etc/letsencrypt/live/example.com/fullchain.pem;" in conf
    )
    assert "server_name shop.example.com;\n\n        ssl_certificate /etc/letsencrypt/live/shop.example.com/" in conf
    assert conf.count("ssl_certificate /etc/letsencrypt/live/example.com/fullchain.pem;") == 3
    assert certificate_lines(cfg) == [
        "  certificate example.com (holds example.com, *.example.com): serves hooks.example.com, *.example.com, "
        "example.com",
        "  certificate shop.example.com (holds shop.example.com): serves shop.example.com",
    ]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"sites": [{"server_names": ["x.org"], "upstream": {"host": "w", "port": 1}}]},
            "no certificate lineage covers 'x.org'",
        ),
        (
            {"sites": [{"server_names": ["a.b.example.com"], "upstream": {"host": "w", "port": 1}}]},
            "no certificate lineage covers 'a.b.example.com'",
        ),
        (
            {"webhook": {"server_name": "hooks.x.org", "upstream": {"host": "w", "port": 1}}},
            "no certificate lineage covers 'hooks.x.org'",
        ),
        (
            {
                "sites": [
                    {"server_names": ["a.example.com"], "certificate": "nope", "upstream": {"host": "w", "port": 1}}
                ]
            },
            "certificate 'nope' (for 'a.example.com') is not listed under proxy.certificates",
        ),
        (
            {
                "sites": [
                    {
                        "server_names": ["a.example.com"],
                        "certificate": "shop.example.com",
                        "upstream": {"host": "w", "port": 1},
                    }
                ]
            },
            "certificate 'shop.example.com' does not cover 'a.example.com'",
        ),
        (
            {"certificates": {}, "sites": [{"server_names": ["*.example.com"], "upstream": {"host": "w", "port": 1}}]},
            "'*.example.com' is a wildcard: name the lineage",
        ),
        ({"certificates": {"example.com": []}}, "needs at least one entry"),
        ({"certificates": {"example.com": ["*.*.example.com"]}}, "is not a valid server name"),
        ({"certificates": {"example.com": ["a.*.example.com"]}}, "is not a valid server name"),
    ],
)
def test_check_rules_refuses_a_name_no_lineage_covers(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(
        ValidationError, match=problem.replace("*", r"\*").replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")
    ):
        ProxyConfig.model_validate(proxy(**changes))


def test_without_certificates_the_old_defaults_hold() -> None:
    cfg = ProxyConfig.model_validate(
        proxy(
            certificates={},
            sites=[
                {"server_names": ["*.example.com"], "certificate": "example.com", "upstream": {"host": "w", "port": 1}},
                {"server_names": ["shop.example.com"], "upstream": {"host": "w", "port": 1}},
            ],
        )
    )
    assert [(lineage, names) for _, lineage, names in cfg.tls_servers()] == [
        ("example.com", ("*.example.com",)),
        ("shop.example.com", ("shop.example.com",)),
    ]
    assert cfg.lineages() == ["example.com", "hooks.example.com", "shop.example.com"]


def test_the_receivers_own_name_stays_a_plain_name() -> None:
    with pytest.raises(ValidationError):
        ProxyConfig.model_validate(
            proxy(webhook={"server_name": "*.example.com", "upstream": {"host": "w", "port": 1}})
        )
