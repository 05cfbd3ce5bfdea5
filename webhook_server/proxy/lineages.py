"""Which certbot lineage serves which server name: wildcards, and one certificate for several sites.

Pure functions over :class:`ProxyConfig`; ``render-nginx``, ``check-rules``, ``reload-proxy --mode secrets``
and the expiry watch all ask here, so they never disagree about which files a name is served from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webhook_server.proxy.config import ProxyConfig, Site


def covers(pattern: str, name: str) -> bool:
    """Whether a certificate holding ``pattern`` is valid for ``name`` (both lowercase).

    A wildcard stands for exactly one leftmost label (RFC 6125, as browsers check): ``*.example.com``
    covers ``a.example.com`` and the wildcard itself, not ``example.com`` nor ``a.b.example.com``.
    """
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    label, dot, rest = name.partition(".")
    return bool(dot) and label not in ("", "*") and rest == pattern[2:]


def lineage_for(name: str, certificates: Mapping[str, Sequence[str]]) -> str | None:
    """The lineage that serves ``name``: one that holds the exact name, else one whose wildcard covers it,
    the first declared in each case; None when none does."""
    exact = next((lineage for lineage, names in certificates.items() if name in names), None)
    if exact is not None:
        return exact
    return next(
        (lineage for lineage, names in certificates.items() if any(covers(p, name) for p in names)),
        None,
    )


def site_groups(config: ProxyConfig, site: Site) -> list[tuple[str, tuple[str, ...]]]:
    """(lineage, names) for ``site``: its names grouped by the certificate each is served with, in order.

    An explicit ``certificate:`` serves every name; else ``proxy.certificates`` decides per name; else the
    first name is the lineage, as certbot names it.
    """
    if site.certificate is not None or not config.certificates:
        return [(site.lineage, site.server_names)]
    groups: dict[str, list[str]] = {}
    for name in site.server_names:
        lineage = lineage_for(name, config.certificates)
        if lineage is None:
            raise ValueError(_uncovered(name, config.certificates))
        groups.setdefault(lineage, []).append(name)
    return [(lineage, tuple(names)) for lineage, names in groups.items()]


def webhook_lineage(config: ProxyConfig) -> str:
    webhook = config.webhook
    if webhook.certificate is not None or not config.certificates:
        return webhook.lineage
    return lineage_for(webhook.server_name, config.certificates) or webhook.lineage


def _uncovered(name: str, certificates: Mapping[str, Sequence[str]]) -> str:
    known = "; ".join(f"{lineage}: {', '.join(names)}" for lineage, names in certificates.items())
    return f"no certificate lineage covers {name!r} (proxy.certificates has {known})"


def check_coverage(config: ProxyConfig) -> None:
    """ValueError for a name no lineage covers: nginx would serve it a certificate that browsers refuse."""
    certificates = config.certificates
    named: list[tuple[str | None, Iterable[str]]] = [(config.webhook.certificate, [config.webhook.server_name])]
    named += [(site.certificate, site.server_names) for site in config.sites]
    for explicit, names in named:
        for name in names:
            if not certificates:
                if name.startswith("*.") and explicit is None:
                    raise ValueError(
                        f"{name!r} is a wildcard: name the lineage that holds it with certificate:, or list "
                        "the lineages under proxy.certificates (a wildcard certificate needs the DNS-01 challenge)"
                    )
                continue
            if explicit is None:
                if lineage_for(name, certificates) is None:
                    raise ValueError(_uncovered(name, certificates))
            elif explicit not in certificates:
                raise ValueError(f"certificate {explicit!r} (for {name!r}) is not listed under proxy.certificates")
            elif not any(covers(p, name) for p in certificates[explicit]):
                raise ValueError(
                    f"certificate {explicit!r} does not cover {name!r}: it holds {', '.join(certificates[explicit])}"
                )


def certificate_lines(config: ProxyConfig) -> list[str]:
    """For ``check-rules``: each lineage, the names its certificate holds (when declared) and what it serves."""
    served: dict[str, list[str]] = {config.webhook_lineage: [config.webhook.server_name]}
    for _, lineage, names in config.tls_servers():
        served.setdefault(lineage, []).extend(names)
    lines = []
    for lineage in sorted(served):
        holds = config.certificates.get(lineage)
        held = f" (holds {', '.join(holds)})" if holds else ""
        lines.append(f"  certificate {lineage}{held}: serves {', '.join(served[lineage])}")
    return lines
