"""The connection to Docker and the translation of docker-py's errors into the project's own.

Only modules in this package import ``docker``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import docker
import docker.errors
import requests

from webhook_server.errors import DockerError, DockerUnavailable, UpdateOutOfSequence, UpdateUncertain

DEFAULT_HOST = "unix:///var/run/docker.sock"

# Connection problems surface from requests/urllib3 or the OS, depending on where the socket fails.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ConnectTimeout,
    ConnectionError,
    FileNotFoundError,
)
# DOCKER_HOST=ssh:// goes through paramiko (the docker[ssh] extra), which connects when the client is made
# and raises its own errors. Refused credentials or host keys are mistakes to report at once; anything else
# from the SSH layer (no route, a dropped session, a banner that never came) is an outage to retry.
SSH_REFUSALS: tuple[type[BaseException], ...] = ()
SSH_ERRORS: tuple[type[BaseException], ...] = ()
try:
    import paramiko
except ImportError:  # pragma: no cover - the extra is declared, but a bare docker install may lack it
    pass
else:
    SSH_REFUSALS = (paramiko.AuthenticationException, paramiko.BadHostKeyException)
    SSH_ERRORS = (paramiko.SSHException, paramiko.ssh_exception.NoValidConnectionsError)


def host_of(docker_host: str | None) -> str:
    """The Docker host a client for ``docker_host`` talks to, as error messages name it."""
    return docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def connect(docker_host: str | None = None, *, timeout: float = 30.0) -> docker.DockerClient:
    """A client for ``docker_host``, or for the environment's DOCKER_HOST as docker-py reads it.

    Creating the client does not contact the daemon, so a server can start while Docker is down.
    """
    if docker_host:
        return docker.DockerClient(base_url=docker_host, version="auto", timeout=timeout)
    return docker.from_env(version="auto", timeout=timeout)


def _caused_by_connection(e: BaseException) -> bool:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, CONNECTION_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def translated(action: str, *, host: str | None = None, sent: bool = False) -> Iterator[None]:
    """Turn errors from Docker into DockerError subclasses that say what was being done, and where.

    ``sent``: the call changes state, so a read timeout means "it may have happened" (UpdateUncertain),
    not "Docker is down": retrying blindly could misread our own update as someone else's.
    """
    host = host_of(host)
    try:
        yield
    except DockerError:
        raise
    except docker.errors.APIError as e:
        explanation = str(e.explanation or e)
        if "update out of sequence" in explanation:
            raise UpdateOutOfSequence(f"{action}: {explanation}") from e
        raise DockerError(f"{action}: {explanation} (Docker at {host})") from e
    except requests.exceptions.ReadTimeout as e:
        if sent:
            raise UpdateUncertain(f"{action}: Docker at {host} did not answer in time") from e
        raise DockerUnavailable(f"{action}: Docker at {host} did not answer in time") from e
    except docker.errors.DockerException as e:
        # docker-py wraps a failed API-version negotiation in a bare DockerException; anything else of that
        # type (a credential store failing, an invalid reference) is a real error that retrying cannot fix.
        if _caused_by_connection(e):
            raise DockerUnavailable(f"{action}: Docker at {host} is unreachable: {_root(e)}") from e
        raise DockerError(f"{action}: {e} (Docker at {host})") from e
    except CONNECTION_ERRORS as e:
        raise DockerUnavailable(f"{action}: Docker at {host} is unreachable: {_root(e)}") from e
    except SSH_REFUSALS as e:
        raise DockerError(f"{action}: Docker at {host} refused the SSH connection: {_root(e)}") from e
    except SSH_ERRORS as e:
        raise DockerUnavailable(f"{action}: Docker at {host} is unreachable over SSH: {_root(e)}") from e


def _root(e: BaseException) -> str:
    """The innermost cause's name and message: 'ConnectionRefusedError: [Errno 111] Connection refused'."""
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    text = str(e).strip()
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__
