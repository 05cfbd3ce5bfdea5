"""``nginx -t`` accepts every rendered variant, checked by an nginx that takes the same syntax branches.

The golden variants (``tests/unit/golden/*.yaml``) and nginx/deploy_rules.example.yaml are moved into a
temp prefix (127.0.0.1 high ports, pid/temp/logs inside it, openssl-made certificates for every lineage)
and validated: by the local nginx (1.22 / OpenSSL 3.0) when the variant's versions take the same branches,
otherwise by Debian trixie's nginx (1.26 / OpenSSL 3.5) in a chroot. The negative controls show that those
branches matter.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nginx_bed import (
    NginxBuild,
    Rootfs,
    local_nginx_build,
    make_dir,
    nginx_test,
    prepare_prefix,
    relocate,
    require,
    self_signed,
)
from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.render import ecdh_curves, http2_directive
from webhook_server.rules import load_rules

pytestmark = pytest.mark.nginx
# Its modern variants ask for debian_rootfs at run time: the worker that makes it for the one-node bed's tests.
XDIST_GROUP = "singlenode"

GOLDEN = Path(__file__).parents[2] / "unit" / "golden"
EXAMPLE = Path(__file__).parents[3] / "nginx" / "deploy_rules.example.yaml"
FILES = {p.stem: p for p in sorted(GOLDEN.glob("*.yaml"))} | {"example": EXAMPLE}
VARIANTS = list(FILES)


def variant(name: str) -> ProxyConfig:
    proxy = load_rules(FILES[name]).proxy
    assert proxy is not None
    return proxy


def same_branches(config: ProxyConfig, build: NginxBuild) -> bool:
    return http2_directive(config.nginx_version) == http2_directive(build.nginx) and ecdh_curves(
        config.openssl_version
    ) == ecdh_curves(build.openssl)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_dir("nginx-t-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check(config: ProxyConfig, *, outside: Path, inside: Path, nginx: list[str], acme_only: bool) -> str:
    """Relocate, write certificates and nginx.conf, run nginx -t; return its output (empty when silent)."""
    moved = relocate(config, inside, http_port=18080, https_port=18443)
    for lineage in {config.webhook.lineage, *(s.lineage for s in config.sites)}:
        self_signed(outside / "live" / lineage, [lineage])
    prepare_prefix(outside, moved, acme_only=acme_only)
    result = nginx_test(inside, nginx=nginx)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.parametrize("acme_only", [False, True], ids=["full", "acme-only"])
@pytest.mark.parametrize("name", VARIANTS)
def test_nginx_accepts_the_rendered_variant(
    request: pytest.FixtureRequest, workdir: Path, name: str, acme_only: bool
) -> None:
    require("nginx", "openssl")
    config = variant(name)
    local = local_nginx_build()
    if same_branches(config, local):
        output = check(config, outside=workdir, inside=workdir, nginx=["nginx"], acme_only=acme_only)
    else:
        rootfs: Rootfs = request.getfixturevalue("debian_rootfs")
        assert same_branches(config, rootfs.build), f"no nginx here takes {name}'s branches"
        outside = rootfs.root / "work" / workdir.name
        outside.mkdir(parents=True)
        try:
            output = check(config, outside=outside, inside=Path("/work") / workdir.name, nginx=rootfs.nginx(),
                           acme_only=acme_only)  # fmt: skip
        finally:
            shutil.rmtree(outside, ignore_errors=True)
    # -q only silences the "syntax is ok" lines: any warning (a deprecated directive, say) is printed.
    assert output == "", output


def test_both_branches_are_covered() -> None:
    local = local_nginx_build()
    branches = {same_branches(variant(name), local) for name in VARIANTS}
    assert branches == {True, False}, "the golden variants should cover the local and the modern syntax"


def test_modern_http2_syntax_fails_on_old_nginx(workdir: Path) -> None:
    """Negative control: what the version switch protects against, on this machine's nginx."""
    require("nginx", "openssl")
    local = local_nginx_build()
    if http2_directive(local.nginx):
        pytest.skip(f"the local nginx {local.nginx} knows http2 on;")
    config = variant("bookworm-receiver-only").with_versions(nginx="1.25.1")
    with pytest.raises(AssertionError, match='unknown directive "http2"'):
        check(config, outside=workdir, inside=workdir, nginx=["nginx"], acme_only=False)


def test_hybrid_group_fails_on_old_openssl(workdir: Path) -> None:
    require("nginx", "openssl")
    local = local_nginx_build()
    if local.openssl >= (3, 5, 0):
        pytest.skip(f"the local OpenSSL {local.openssl} knows X25519MLKEM768")
    config = variant("bookworm-receiver-only").with_versions(openssl="3.5")
    with pytest.raises(AssertionError, match="X25519MLKEM768"):
        check(config, outside=workdir, inside=workdir, nginx=["nginx"], acme_only=False)
