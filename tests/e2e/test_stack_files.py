"""The HA stack files merge over deploy/stack.yml into what the README promises, as `docker stack deploy`
would merge them (`docker stack config`: the Docker CLI's own merge and interpolation, no daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.bed import docker_cli, unavailable

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _cli_with_stack_config() -> str:
    """A Docker CLI that has `docker stack config` (23.0 and later; Debian's docker.io 20.10 has not)."""
    for candidate in dict.fromkeys(filter(None, [shutil.which("docker"), docker_cli()])):
        probe = subprocess.run([candidate, "stack", "config", "--help"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return candidate
    unavailable("no Docker CLI with `docker stack config` (Docker 23 or later)")


def merged(*files: str, **env: str) -> dict[str, Any]:
    docker = _cli_with_stack_config()
    variables = {"WEBHOOK_IMAGE": "reg.test/webhook:1", "WEBHOOK_RULES_FILE": "/dev/null", "NGINX_CONF": "/dev/null"}
    result = subprocess.run(
        [docker, "stack", "config", *(a for f in files for a in ("-c", str(DEPLOY / f)))],
        env={"PATH": os.environ["PATH"], **variables, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_ha_puts_one_receiver_on_each_manager_on_the_shared_journal() -> None:
    webhook = merged("stack.yml", "stack-ha.yml")["services"]["webhook"]
    deploy = webhook["deploy"]
    assert deploy["replicas"] == 3
    assert deploy["placement"]["max_replicas_per_node"] == 1
    assert deploy["placement"]["constraints"] == ["node.role == manager"]
    assert deploy["update_config"]["order"] == "start-first"
    assert webhook["environment"]["WEBHOOK_DB_FILE"] == "/run/secrets/webhook_db"
    secrets = {s["source"]: s for s in webhook["secrets"]}
    # The base file's token secrets stay; the URL (with its password) is one more, readable by the server only.
    assert set(secrets) == {"webhook_token", "webhook_api_token", "webhook_db"}
    assert (secrets["webhook_db"]["uid"], secrets["webhook_db"]["mode"]) == ("10001", 0o400)


def test_ha_replicas_and_secret_names_are_settings() -> None:
    config = merged("stack.yml", "stack-ha.yml", WEBHOOK_REPLICAS="5", WEBHOOK_DB_SECRET="prod_db")
    assert config["services"]["webhook"]["deploy"]["replicas"] == 5
    assert config["secrets"]["webhook_db"]["name"] == "prod_db"


def test_the_optional_postgres_joins_the_receivers_network_on_a_labelled_node() -> None:
    config = merged("stack.yml", "stack-ha.yml", "stack-postgres.yml")
    postgres = config["services"]["postgres"]
    assert postgres["deploy"]["placement"]["constraints"] == ["node.labels.webhook.postgres == true"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/webhook_pg_password"
    assert list(postgres["networks"]) == list(config["services"]["webhook"]["networks"]) == ["proxy"]
