"""docker-py's errors become the project's own, and only connection failures count as "unreachable"."""

from __future__ import annotations

import re
from pathlib import Path

import docker.errors
import paramiko
import pytest
import requests

from webhook_server.errors import DockerError, DockerUnavailable, UpdateUncertain
from webhook_server.swarm import SwarmServices
from webhook_server.swarm.client import translated


def _negotiation_failure() -> docker.errors.DockerException:
    try:
        try:
            raise requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
        except requests.exceptions.ConnectionError as e:
            raise docker.errors.DockerException(f"Error while fetching server API version: {e}") from e
    except docker.errors.DockerException as wrapped:
        return wrapped


CASES: list[tuple[str, BaseException, bool, type[DockerError], str]] = [
    (
        "credential-store",
        docker.errors.DockerException("Credentials store error: StoreError('docker-credential-pass not installed')"),
        False,
        DockerError,
        "update service api: Credentials store error",
    ),
    (
        "invalid-repository",
        docker.errors.InvalidRepository("Invalid repository name"),
        False,
        DockerError,
        "update service api: Invalid repository name",
    ),
    ("negotiation", _negotiation_failure(), False, DockerUnavailable, "Docker at tcp://127.0.0.1:1 is unreachable"),
    ("refused", requests.exceptions.ConnectionError("refused"), False, DockerUnavailable, "is unreachable"),
    ("read-timeout-read", requests.exceptions.ReadTimeout("slow"), False, DockerUnavailable, "did not answer in time"),
    ("read-timeout-sent", requests.exceptions.ReadTimeout("slow"), True, UpdateUncertain, "did not answer in time"),
    (
        "ssh-no-connection",
        paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 22): ConnectionRefusedError(111, "refused")}),
        False,
        DockerUnavailable,
        "is unreachable over SSH: NoValidConnectionsError",
    ),
    ("ssh-banner", paramiko.SSHException("Error reading SSH protocol banner"), False, DockerUnavailable, "over SSH"),
    (
        "ssh-auth",
        paramiko.AuthenticationException("Authentication failed."),
        False,
        DockerError,
        "refused the SSH connection: AuthenticationException: Authentication failed.",
    ),
]


@pytest.mark.parametrize(("error", "sent", "expected", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_translated(error: BaseException, sent: bool, expected: type[DockerError], text: str) -> None:
    with pytest.raises(DockerError) as raised, translated("update service api", host="tcp://127.0.0.1:1", sent=sent):
        raise error
    assert type(raised.value) is expected
    assert text in raised.value.message
    assert "tcp://127.0.0.1:1" in raised.value.message


def test_the_host_defaults_to_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/other.sock")
    with pytest.raises(DockerUnavailable, match=re.escape("unix:///run/other.sock")), translated("ping Docker"):
        raise ConnectionRefusedError(111, "Connection refused")


def test_every_error_that_crosses_in_is_reported(tmp_path: Path) -> None:
    seen: list[DockerError] = []
    swarm = SwarmServices(f"unix://{tmp_path / 'no-docker.sock'}", on_error=seen.append)
    with pytest.raises(DockerUnavailable):
        swarm.ping()
    assert [e.code for e in seen] == ["docker_unavailable"]
