"""The rendered nginx.conf: golden files per variant, the version-dependent choices, and the last-line guard.

Golden inputs are ``tests/unit/golden/*.yaml`` (whole rules files, loaded through ``load_rules`` as in
production); the expected output sits beside each as ``NAME.conf`` and ``NAME.acme.conf`` (``--acme-only``).
After a deliberate template change, regenerate with ``UPDATE_GOLDEN=1 python -m pytest tests/unit`` and
review the diff. ``tests/e2e/nginx/test_nginx_syntax.py`` runs ``nginx -t`` on the same variants.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from webhook_server.cli import main
from webhook_server.proxy.config import ProxyConfig, Upstream, Webhook
from webhook_server.proxy.render import (
    CLASSIC_CURVES,
    HYBRID_CURVES,
    UnsafeValue,
    ecdh_curves,
    http2_directive,
    nginx_time,
    render_nginx_conf,
)
from webhook_server.rules import load_rules

GOLDEN = Path(__file__).parent / "golden"
VARIANTS = sorted(p.stem for p in GOLDEN.glob("*.yaml"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def variant(name: str) -> ProxyConfig:
    proxy = load_rules(GOLDEN / f"{name}.yaml").proxy
    assert proxy is not None
    return proxy


def test_there_are_variants() -> None:
    assert len(VARIANTS) >= 2


@pytest.mark.parametrize("acme_only", [False, True], ids=["full", "acme-only"])
@pytest.mark.parametrize("name", VARIANTS)
def test_golden(name: str, acme_only: bool) -> None:
    rendered = render_nginx_conf(variant(name), acme_only=acme_only)
    golden = GOLDEN / f"{name}{'.acme' if acme_only else ''}.conf"
    if UPDATE:
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"{golden.name} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert rendered == golden.read_text(encoding="utf-8"), f"{golden.name} differs (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize(
    ("version", "expected"),
    [((1, 22, 1), False), ((1, 25, 0), False), ((1, 25, 1), True), ((1, 26, 3), True), ((1, 27, 0), True)],
)
def test_http2_syntax_follows_nginx_version(version: tuple[int, int, int], expected: bool) -> None:
    assert http2_directive(version) is expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((1, 1, 1), CLASSIC_CURVES),
        ((3, 0, 13), CLASSIC_CURVES),
        ((3, 4, 9), CLASSIC_CURVES),
        ((3, 5, 0), HYBRID_CURVES),
    ],
)
def test_curves_follow_openssl_version(version: tuple[int, int, int], expected: str) -> None:
    assert ecdh_curves(version) == expected


def test_version_choices_reach_the_output() -> None:
    old = render_nginx_conf(variant("bookworm-receiver-only"))
    new = render_nginx_conf(variant("bookworm-receiver-only").with_versions(nginx="1.25.1", openssl="3.5"))
    assert "http2 on;" not in old and re.search(r"listen 443 ssl http2;", old)
    assert "X25519MLKEM768" not in old
    assert "http2 on;" in new and " http2;" not in new
    assert f"ssl_ecdh_curve {HYBRID_CURVES};" in new


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (0.5, "500ms"), (90, "90s"), (1.25, "1250ms")])
def test_nginx_time(seconds: float, text: str) -> None:
    assert nginx_time(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("name", VARIANTS)
def test_invariants(name: str) -> None:
    conf = render_nginx_conf(variant(name))
    log_format = conf[conf.index("log_format") : conf.index(";", conf.index("log_format"))]
    # The raw request line and URI (both hold the webhook token) are never logged.
    assert "$request " not in log_format and "$request_uri" not in log_format and '$request"' not in log_format
    assert "$loggable_uri" in log_format
    assert "server_tokens off;" in conf
    assert "ssl_stapling" not in conf
    assert "ssl_reject_handshake on;" in conf
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in conf
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert "ssl_prefer_server_ciphers off;" in conf
    assert "limit_req_status 429;" in conf
    assert "error_page 502 503 504 =503 @receiver_down;" in conf
    assert conf.count("{") == conf.count("}")
    # Every server that proxies declares its timeouts explicitly.
    assert conf.count("proxy_pass $backend;") == conf.count("proxy_read_timeout")


def test_acme_only_has_no_tls() -> None:
    conf = render_nginx_conf(variant("modern-multi-site"), acme_only=True)
    assert re.search(r"^\s*ssl_", conf, re.MULTILINE) is None
    assert re.search(r"listen .* ssl", conf) is None
    assert "8443" not in conf and "server_name hooks.example.com;" not in conf
    assert "/.well-known/acme-challenge/" in conf and "return 444;" in conf


def test_finalize_refuses_what_validation_would_have_refused() -> None:
    # model_construct skips validation: the renderer's own guard is the last line.
    good = variant("bookworm-receiver-only")
    evil_webhook = Webhook.model_construct(
        **{**dict(good.webhook), "upstream": Upstream.model_construct(host="x; include /etc/passwd", port=80)}
    )
    evil = good.model_copy(update={"webhook": evil_webhook})
    with pytest.raises(UnsafeValue, match="include"):
        render_nginx_conf(evil)


@pytest.mark.parametrize("bad", ["a b", "a;b", "a{b", "a}b", "a$b", 'a"b', "a'b", "a\nb", "ab\n", "a#b", "a\\b"])
def test_finalize_allow_list(bad: str) -> None:
    good = variant("bookworm-receiver-only")
    evil = good.model_copy(update={"user": bad})
    with pytest.raises(UnsafeValue):
        render_nginx_conf(evil)


# ---- the render-nginx command ---------------------------------------------------------------------


def render_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Through the real ``webhook-server`` group: its error handling is what users see."""
    return CliRunner().invoke(main, ["render-nginx", *args], env=env)


def test_cli_prints_to_stdout() -> None:
    # No Docker is needed (nor tried) to render.
    result = render_cli(
        "--rules", str(GOLDEN / "bookworm-receiver-only.yaml"), env={"DOCKER_HOST": "tcp://127.0.0.1:1"}
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "bookworm-receiver-only.conf").read_text()


def test_cli_reads_rules_path_from_env() -> None:
    result = render_cli("--acme-only", env={"WEBHOOK_RULES": str(GOLDEN / "modern-multi-site.yaml")})
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "modern-multi-site.acme.conf").read_text()


def test_cli_version_overrides(tmp_path: Path) -> None:
    out = tmp_path / "nginx.conf"
    args = ["--rules", str(GOLDEN / "bookworm-receiver-only.yaml"), "--out", str(out)]
    result = render_cli(*args, "--nginx-version", "1.27", "--openssl-version", "3.5.0")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    text = out.read_text()
    assert "http2 on;" in text and HYBRID_CURVES in text
    assert "Rendered for nginx 1.27.0 and OpenSSL 3.5.0" in text
    assert [p.name for p in tmp_path.iterdir()] == ["nginx.conf"]  # no temp file left behind
    assert out.stat().st_mode & 0o777 == 0o644


def _rules(tmp_path: Path, proxy: str) -> Path:
    path = tmp_path / "deploy_rules.yaml"
    path.write_text("services:\n  web:\n    repository: acme/web\n    tags: latest\n" + proxy)
    return path


PROXY = "proxy:\n  webhook:\n    server_name: a.example\n    upstream: {host: w, port: 1}\n"


@pytest.mark.parametrize(
    ("proxy", "args", "message"),
    [
        ("", [], "deploy_rules.yaml: no proxy: section; see nginx/README.md for an example"),
        (
            "proxy:\n  webhook:\n    server_name: 'a.example; evil'\n    upstream: {host: w, port: 1}\n",
            [],
            "line 7: proxy.webhook.server_name: 'a.example; evil' is not a valid domain name",
        ),
        (PROXY, ["--nginx-version", "1.18"], "--nginx-version: the template needs nginx 1.19.4 or newer"),
        (PROXY, ["--openssl-version", "three"], "--openssl-version: 'three' is not a version"),
        (PROXY, ["--out", "/nonexistent-dir/nginx.conf"], "cannot write /nonexistent-dir/nginx.conf"),
        # Accepted by the rules' validation once, refused by the renderer with a traceback: now check-rules
        # (and so render-nginx) refuses it with its line.
        (
            PROXY + "  resolvers: 'fe80::1%eth0'\n",
            [],
            "line 9: proxy.resolvers.0.address: 'fe80::1%eth0' cannot be written into nginx.conf",
        ),
    ],
    ids=["no-section", "injection", "old-nginx", "version-text", "unwritable", "render-refused"],
)
def test_cli_user_errors_are_one_line_exit_2(tmp_path: Path, proxy: str, args: list[str], message: str) -> None:
    result = render_cli("--rules", str(_rules(tmp_path, proxy)), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.startswith("webhook-server: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert isinstance(result.exception, SystemExit)


def test_cli_missing_rules_file(tmp_path: Path) -> None:
    result = render_cli("--rules", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
