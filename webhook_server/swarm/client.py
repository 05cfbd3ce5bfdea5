"""The connection to Docker and the translation of docker-py's errors into the project's own.

Only modules in this package import ``docker``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import docker.errors
import requests

from webhook_server.errors import DockerError, DockerUnavailable, UpdateOutOfSequence

# Connection problems surface from requests/urllib3 or the OS, depending on where the socket fails.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ConnectionError,
    FileNotFoundError,
)


def connect(docker_host: str | None = None, *, timeout: float = 30.0) -> docker.DockerClient:
    """A client for ``docker_host``, or for the environment's DOCKER_HOST as docker-py reads it.

    Creating the client does not contact the daemon, so a server can start while Docker is down.
    """
    if docker_host:
        return docker.DockerClient(base_url=docker_host, version="auto", timeout=timeout)
    return docker.from_env(version="auto", timeout=timeout)


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn errors from Docker into DockerError subclasses that say what was being done."""
    try:
        yield
    except DockerError:
        raise
    except docker.errors.APIError as e:
        explanation = str(e.explanation or e)
        if "update out of sequence" in explanation:
            raise UpdateOutOfSequence(f"{action}: {explanation}") from e
        raise DockerError(f"{action}: {explanation}") from e
    except docker.errors.DockerException as e:
        # docker-py raises a bare DockerException when it cannot even negotiate the API version.
        raise DockerUnavailable(f"{action}: Docker is unreachable: {e}") from e
    except CONNECTION_ERRORS as e:
        raise DockerUnavailable(f"{action}: Docker is unreachable: {e.__class__.__name__}") from e
