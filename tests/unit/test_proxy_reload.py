"""reload-proxy's decisions, against a fake swarm: who is checked, signalled or force-updated, and when not."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from webhook_server.errors import DockerUnavailable, ServiceNotFound
from webhook_server.proxy import commands
from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.reload import (
    SECRET_NAME_MAX,
    CheckResult,
    NginxTask,
    ProxyConfigInvalid,
    ReloadError,
    nginx_test_command,
    plan_reload,
    reload_proxy,
    secret_name,
)

LOCAL, OTHER = "node-local", "node-other"


@dataclass
class FakeSwarm:
    tasks: list[NginxTask]
    bad: dict[str, str] = field(default_factory=dict)  # container id → nginx -t output
    calls: list[tuple[str, ...]] = field(default_factory=list)
    secrets: dict[str, bytes] = field(default_factory=dict)
    error: Exception | None = None

    def local_node_id(self) -> str:
        return LOCAL

    def running_tasks(self, service: str) -> list[NginxTask]:
        if self.error:
            raise self.error
        return self.tasks

    def check_config(self, container_id: str) -> CheckResult:
        self.calls.append(("check", container_id))
        if container_id in self.bad:
            return CheckResult(ok=False, output=self.bad[container_id])
        return CheckResult(ok=True, output="nginx: configuration file /etc/nginx/nginx.conf test is successful")

    def reload(self, container_id: str) -> None:
        self.calls.append(("hup", container_id))

    def force_update(self, service: str) -> None:
        self.calls.append(("force", service))

    def ensure_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        self.calls.append(("secret", name, labels["webhook-server.proxy.target"]))
        self.secrets[name] = data
        return f"id-{name}"

    def use_secrets(self, service: str, secrets: Mapping[str, tuple[str, str]]) -> None:
        self.calls.append(("use", service, *sorted(secrets)))

    def close(self) -> None:
        self.calls.append(("close",))


def task(n: int, node: str = LOCAL, container: str | None = "auto") -> NginxTask:
    return NginxTask(task_id=f"t{n}", node_id=node, container_id=f"c{n}" if container == "auto" else container)


def test_plan_splits_local_and_remote_tasks() -> None:
    tasks = [task(1), task(2, OTHER), task(3), task(4, LOCAL, container=None)]
    plan = plan_reload(tasks, local_node_id=LOCAL)
    assert [t.task_id for t in plan.local] == ["t1", "t3"]
    # A task whose container is not known yet cannot be signalled: the forced update covers it.
    assert [t.task_id for t in plan.remote] == ["t2", "t4"]
    assert plan.force_update


def test_plan_needs_a_task() -> None:
    with pytest.raises(ReloadError, match="no running nginx task"):
        plan_reload([], local_node_id=LOCAL)


def test_all_local_tasks_are_checked_before_any_is_signalled() -> None:
    swarm = FakeSwarm([task(1), task(2)])
    report = reload_proxy(swarm, "nginx")
    assert swarm.calls == [("check", "c1"), ("check", "c2"), ("hup", "c1"), ("hup", "c2")]
    assert report.summary("nginx") == "nginx: nginx -t passed in 2 task(s); reloaded 2 task(s) on this node with SIGHUP"


def test_one_failing_check_reloads_nothing() -> None:
    swarm = FakeSwarm([task(1), task(2), task(3, OTHER)], bad={"c2": 'nginx: [emerg] unknown directive "htt2"'})
    with pytest.raises(ProxyConfigInvalid) as info:
        reload_proxy(swarm, "nginx")
    assert "nothing was reloaded" in info.value.message
    assert 'unknown directive "htt2"' in info.value.message
    assert [c for c in swarm.calls if c[0] != "check"] == []


def test_remote_tasks_get_a_forced_update_after_local_reloads() -> None:
    swarm = FakeSwarm([task(1), task(2, OTHER)])
    report = reload_proxy(swarm, "nginx")
    assert swarm.calls == [("check", "c1"), ("hup", "c1"), ("force", "nginx")]
    assert report.force_updated


def test_only_remote_tasks() -> None:
    swarm = FakeSwarm([task(1, OTHER), task(2, OTHER)])
    reload_proxy(swarm, "nginx")
    assert swarm.calls == [("force", "nginx")]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nginx", "-c", "/srv/proxy/nginx.conf", "-g", "daemon off;"],
         ["nginx", "-c", "/srv/proxy/nginx.conf", "-g", "daemon off;", "-t"]),
        (["/usr/sbin/nginx", "-g", "daemon off;"], ["/usr/sbin/nginx", "-g", "daemon off;", "-t"]),
        (["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"], ["nginx", "-t"]),
        ([], ["nginx", "-t"]),
    ],
)  # fmt: skip
def test_nginx_test_command_checks_the_config_nginx_runs(argv: list[str], expected: list[str]) -> None:
    assert nginx_test_command(argv) == expected


def test_secret_names_follow_content() -> None:
    a = secret_name("a3_nginx", "example.com", "fullchain.pem", b"one")
    assert a.startswith("a3_nginx.example.com.fullchain.") and len(a.rsplit(".", 1)[1]) == 12
    assert secret_name("a3_nginx", "example.com", "fullchain.pem", b"one") == a
    assert secret_name("a3_nginx", "example.com", "fullchain.pem", b"two") != a
    long = secret_name("s" * 40, "l" * 60 + ".example.com", "privkey.pem", b"x")
    assert len(long) <= SECRET_NAME_MAX and ".privkey." in long
    assert secret_name("a b", "c", "fullchain.pem", b"").startswith("a_b.c.")


# ---- secrets mode -----------------------------------------------------------------------------------


def lineage(directory: Path, name: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a test certificate")
    from tests.nginx_bed import self_signed

    self_signed(directory / name, [name])


CONFIG = ProxyConfig.model_validate(
    {
        "paths": {"certificates": "/run/secrets/live"},
        "webhook": {"server_name": "hooks.example.com", "upstream": {"host": "webhook", "port": 8000}},
        "sites": [{"server_names": ["example.com"], "upstream": {"host": "web", "port": 80}}],
    }
)


def test_secrets_mode_makes_one_secret_per_file_and_updates_the_service(tmp_path: Path) -> None:
    for name in ("hooks.example.com", "example.com"):
        lineage(tmp_path, name)
    swarm = FakeSwarm([task(1)])
    report = reload_proxy(swarm, "nginx", mode="secrets", config=CONFIG, cert_dir=tmp_path)
    targets = sorted(f"/run/secrets/live/{n}/{f}" for n in ("hooks.example.com", "example.com")
                     for f in ("fullchain.pem", "privkey.pem"))  # fmt: skip
    assert sorted(report.secrets) == targets
    assert swarm.calls[-1] == ("use", "nginx", *targets)
    assert [c[0] for c in swarm.calls[:-1]] == ["secret"] * 4
    assert swarm.secrets[report.secrets[targets[0]]] == (tmp_path / "example.com" / "fullchain.pem").read_bytes()
    # Nothing is signalled or force-updated: the service update replaces the tasks, start-first.
    assert not any(c[0] in ("hup", "force", "check") for c in swarm.calls)


def test_secrets_mode_refuses_a_key_that_does_not_match(tmp_path: Path) -> None:
    for name in ("hooks.example.com", "example.com", "other"):
        lineage(tmp_path, name)
    shutil.copy(tmp_path / "other" / "privkey.pem", tmp_path / "example.com" / "privkey.pem")
    swarm = FakeSwarm([task(1)])
    with pytest.raises(ReloadError, match=r"example\.com: certificate and key do not belong together"):
        reload_proxy(swarm, "nginx", mode="secrets", config=CONFIG, cert_dir=tmp_path)
    assert swarm.calls == []


def test_secrets_mode_missing_files(tmp_path: Path) -> None:
    swarm = FakeSwarm([task(1)])
    with pytest.raises(ReloadError, match=r"cannot read .*example\.com.*nothing was changed"):
        reload_proxy(swarm, "nginx", mode="secrets", config=CONFIG, cert_dir=tmp_path)
    assert swarm.calls == []


# ---- the command ------------------------------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSwarm:
    swarm = FakeSwarm([task(1)])
    import webhook_server.swarm.proxy as adapter

    monkeypatch.setattr(adapter, "SwarmProxy", lambda docker_host: swarm)
    return swarm


def test_cli_success(fake: FakeSwarm) -> None:
    result = CliRunner().invoke(commands.reload_proxy, ["--service", "a3_nginx"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "a3_nginx: nginx -t passed in 1 task(s); reloaded 1 task(s) on this node with SIGHUP\n"
    assert fake.calls[-1] == ("close",)


def test_cli_failed_validation_exits_1_and_reloads_nothing(fake: FakeSwarm) -> None:
    fake.bad["c1"] = "nginx: [emerg] cannot load certificate"
    result = CliRunner().invoke(commands.reload_proxy, [])
    assert result.exit_code == 1
    assert result.stderr.startswith("webhook-server: nginx -t failed in task t1 of nginx; nothing was reloaded")
    assert "cannot load certificate" in result.stderr
    assert ("hup", "c1") not in fake.calls


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (ServiceNotFound("nginx"), 2, "service 'nginx' does not exist in the swarm"),
        (DockerUnavailable("listing the tasks of nginx: Docker is unreachable"), 1, "Docker is unreachable"),
    ],
)
def test_cli_docker_errors(fake: FakeSwarm, error: Exception, code: int, message: str) -> None:
    fake.error = error
    result = CliRunner().invoke(commands.reload_proxy, [])
    assert result.exit_code == code
    assert message in result.stderr and "Traceback" not in result.output
