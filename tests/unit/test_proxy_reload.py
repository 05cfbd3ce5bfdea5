"""reload-proxy's decisions, against a fake swarm: who is checked, signalled or force-updated, and when not."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from webhook_server.cli import main
from webhook_server.errors import DockerUnavailable, ServiceNotFound
from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.reload import (
    SECRET_NAME_MAX,
    CheckResult,
    JobResult,
    NginxTask,
    NodeJob,
    ProxyConfigInvalid,
    ReloadError,
    nginx_test_command,
    plan_reload,
    reload_proxy,
    reload_this_node,
    secret_name,
)

LOCAL, OTHER = "node-local", "node-other"


NGINX_COMMAND = ["nginx", "-g", "daemon off;"]
DEFAULT_CONF = "/etc/nginx/nginx.conf"


@dataclass
class FakeSwarm:
    """Each container runs ``commands[container]`` (default: plain nginx); ``nginx -t`` fails for the configs
    in ``broken`` (by path) and in the containers in ``bad``, with their output."""

    tasks: list[NginxTask]
    bad: dict[str, str] = field(default_factory=dict)  # container id → nginx -t output
    commands: dict[str, list[str]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # config path → nginx -t output
    calls: list[tuple[str, ...]] = field(default_factory=list)
    tests: dict[str, list[str]] = field(default_factory=dict)  # container id → the nginx -t argv run in it
    secrets: dict[str, bytes] = field(default_factory=dict)
    error: Exception | None = None
    job_failures: dict[tuple[str, bool], str] = field(default_factory=dict)  # (node, check only) → output

    def local_node_id(self) -> str:
        return LOCAL

    def running_tasks(self, service: str) -> list[NginxTask]:
        if self.error:
            raise self.error
        return self.tasks

    def container_command(self, container_id: str) -> list[str]:
        return self.commands.get(container_id, NGINX_COMMAND)

    def run_in_container(self, container_id: str, argv: Sequence[str]) -> CheckResult:
        self.calls.append(("check", container_id))
        self.tests[container_id] = list(argv)
        conf = argv[argv.index("-c") + 1] if "-c" in argv else DEFAULT_CONF
        if container_id in self.bad or conf in self.broken:
            return CheckResult(ok=False, output=self.bad.get(container_id) or self.broken[conf])
        return CheckResult(ok=True, output=f"nginx: configuration file {conf} test is successful")

    def reload(self, container_id: str) -> None:
        self.calls.append(("hup", container_id))

    def run_on_nodes(self, *, job: NodeJob, args: Sequence[str], nodes: Sequence[str]) -> list[JobResult]:
        check_only = "--check-only" in args
        self.calls.append(("job-check" if check_only else "job-reload", *nodes))
        assert list(args[:5]) == ["webhook-server", "reload-proxy", "--service", "nginx", "--this-node-only"]
        return [
            JobResult(
                node=f"host-{n}",
                ok=(n, check_only) not in self.job_failures,
                output=self.job_failures.get((n, check_only), "ok"),
            )
            for n in nodes
        ]

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


JOB = NodeJob(image="registry.example/webhook-server:1")
THIRD = "node-third"


def test_with_a_node_job_every_node_checks_before_any_reloads() -> None:
    swarm = FakeSwarm([task(1), task(2, OTHER), task(3, THIRD), task(4, OTHER)])
    report = reload_proxy(swarm, "nginx", job=JOB)
    assert swarm.calls == [
        ("check", "c1"),
        ("job-check", OTHER, THIRD),
        ("hup", "c1"),
        ("job-reload", OTHER, THIRD),
    ]
    assert not report.force_updated
    assert report.summary("nginx") == (
        "nginx: nginx -t passed in 1 task(s); reloaded 1 task(s) on this node with SIGHUP; "
        f"checked and reloaded by a job on host-{OTHER}, host-{THIRD}"
    )


def test_a_check_failing_on_another_node_reloads_nothing_anywhere() -> None:
    swarm = FakeSwarm([task(1), task(2, OTHER), task(3, THIRD)], job_failures={(THIRD, True): "[emerg] no cert"})
    with pytest.raises(ProxyConfigInvalid) as info:
        reload_proxy(swarm, "nginx", job=JOB)
    assert info.value.message.startswith(f"nginx -t failed on host-{THIRD} (nginx); nothing was reloaded")
    assert f"host-{THIRD}: [emerg] no cert" in info.value.message
    assert [c[0] for c in swarm.calls] == ["check", "job-check"]


def test_a_reload_failing_on_another_node_says_where_it_did_work() -> None:
    swarm = FakeSwarm([task(1), task(2, OTHER), task(3, THIRD)], job_failures={(OTHER, False): "gone"})
    with pytest.raises(ReloadError, match=f"the reload failed on host-{OTHER} \\(nginx\\); reloaded on this node"):
        reload_proxy(swarm, "nginx", job=JOB)


def test_a_node_job_touches_only_its_own_node() -> None:
    swarm = FakeSwarm([task(1), task(2, OTHER), task(3, LOCAL, container=None)])
    assert reload_this_node(swarm, "nginx", check_only=True).checked == ["t1"]
    assert swarm.calls == [("check", "c1")]
    report = reload_this_node(swarm, "nginx", check_only=False)
    assert swarm.calls[1:] == [("check", "c1"), ("hup", "c1")]
    assert report.summary("nginx") == "nginx: nginx -t passed in 1 task(s); reloaded 1 task(s) on this node with SIGHUP"
    assert reload_this_node(FakeSwarm([task(2, OTHER)]), "nginx", check_only=False).summary("nginx") == (
        "nginx: no running nginx task on this node"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nginx", "-c", "/srv/proxy/nginx.conf", "-g", "daemon off;"],
         ["nginx", "-c", "/srv/proxy/nginx.conf", "-g", "daemon off;", "-t"]),
        (["/usr/sbin/nginx", "-g", "daemon off;"], ["/usr/sbin/nginx", "-g", "daemon off;", "-t"]),
        # The official image: Entrypoint /docker-entrypoint.sh, Cmd nginx ….
        (["/docker-entrypoint.sh", "nginx", "-c", "/srv/nginx/nginx.conf", "-g", "daemon off;"],
         ["nginx", "-c", "/srv/nginx/nginx.conf", "-g", "daemon off;", "-t"]),
        (["/docker-entrypoint.sh", "nginx-debug", "-g", "daemon off;"], ["nginx-debug", "-g", "daemon off;", "-t"]),
        (["tini", "--", "nginx", "-p", "/srv/", "-e", "stderr"], ["nginx", "-p", "/srv/", "-e", "stderr", "-t"]),
        # Attached values and clustered flags, as nginx itself reads them; -q, -t and -T change no config.
        (["nginx", "-c/srv/a.conf", "-qg", "daemon off;"], ["nginx", "-c", "/srv/a.conf", "-g", "daemon off;", "-t"]),
        (["nginx", "-T", "-q"], ["nginx", "-t"]),
        (["nginx"], ["nginx", "-t"]),
        # A wrapper's argument spelt like nginx is not nginx.
        (["su-exec", "nginx", "nginx", "-c", "/a.conf"], ["nginx", "-c", "/a.conf", "-t"]),
        # Commands that do not say which config nginx reads.
        (["/start.sh"], None),
        (["sh", "-c", "nginx -c /srv/a.conf -g 'daemon off;'"], None),
        (["nginx", "-c"], None),
        (["nginx", "-s", "reload"], None),
        ([], None),
    ],
)  # fmt: skip
def test_nginx_test_command_checks_the_config_nginx_runs(argv: list[str], expected: list[str] | None) -> None:
    assert nginx_test_command(argv) == expected


def test_an_entrypoint_wrapper_does_not_hide_the_config_nginx_runs() -> None:
    """The official nginx image runs /docker-entrypoint.sh, which execs its Cmd: the check must test the -c
    file of that Cmd. Testing the image's default config instead passed and SIGHUPed a broken one."""
    swarm = FakeSwarm(
        [task(1)],
        commands={"c1": ["/docker-entrypoint.sh", "nginx", "-c", "/srv/nginx/nginx.conf", "-g", "daemon off;"]},
        broken={"/srv/nginx/nginx.conf": 'nginx: [emerg] unknown directive "htt2" in /srv/nginx/nginx.conf:9'},
    )
    with pytest.raises(ProxyConfigInvalid, match='unknown directive "htt2"'):
        reload_proxy(swarm, "nginx")
    assert swarm.tests["c1"] == ["nginx", "-c", "/srv/nginx/nginx.conf", "-g", "daemon off;", "-t"]
    assert ("hup", "c1") not in swarm.calls


def test_a_command_that_hides_the_config_reloads_nothing() -> None:
    swarm = FakeSwarm([task(1), task(2)], commands={"c2": ["/start.sh", "--proxy"]})
    with pytest.raises(ReloadError) as info:
        reload_proxy(swarm, "nginx")
    assert info.value.message.startswith(
        "cannot tell which config nginx runs in task t2 of nginx, so nothing was reloaded: "
        "its command does not start nginx (/start.sh --proxy)."
    )
    assert not any(c[0] == "hup" for c in swarm.calls)


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


def reload_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Through the real ``webhook-server`` group: its error handling is what users see."""
    return CliRunner().invoke(main, ["reload-proxy", *args], env=env)


def test_cli_success(fake: FakeSwarm) -> None:
    result = reload_cli("--service", "a3_nginx")
    assert result.exit_code == 0, result.output
    assert result.stdout == "a3_nginx: nginx -t passed in 1 task(s); reloaded 1 task(s) on this node with SIGHUP\n"
    assert fake.calls[-1] == ("close",)


def test_cli_failed_validation_exits_2_and_reloads_nothing(fake: FakeSwarm) -> None:
    fake.bad["c1"] = "nginx: [emerg] cannot load certificate"
    result = reload_cli()
    assert result.exit_code == 2
    assert result.stderr.startswith("webhook-server: nginx -t failed in task t1 of nginx; nothing was reloaded")
    assert "cannot load certificate" in result.stderr
    assert ("hup", "c1") not in fake.calls
    assert fake.calls[-1] == ("close",)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ServiceNotFound("nginx"), "service 'nginx' does not exist in the swarm"),
        (DockerUnavailable("listing the tasks of nginx: Docker at tcp://x:2375 is unreachable"), "is unreachable"),
    ],
)
def test_cli_docker_errors(fake: FakeSwarm, error: Exception, message: str) -> None:
    fake.error = error
    result = reload_cli()
    assert result.exit_code == 2
    assert result.stderr == f"webhook-server: {error}\n"
    assert message in result.stderr


@pytest.mark.parametrize("how", ["option", "environment"])
@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"])
def test_cli_unreachable_docker_is_one_line_naming_the_host(host: str, how: str) -> None:
    """The real adapter, with nothing listening: docker-py fails while it connects, before any call."""
    result = reload_cli("--docker-host", host) if how == "option" else reload_cli(env={"DOCKER_HOST": host})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"webhook-server: connecting to Docker: Docker at {host} is unreachable: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
