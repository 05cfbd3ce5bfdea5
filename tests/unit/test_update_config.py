"""Swarm's UpdateConfig as built from a rule: defaults merged with per-service overrides, in nanoseconds."""

from __future__ import annotations

from pathlib import Path

from webhook_server.rules import load_rules
from webhook_server.swarm.services import update_config

SHIPPED = Path(__file__).resolve().parents[2] / "deploy_rules.yaml"


def test_shipped_rules_build_swarm_update_configs() -> None:
    rules = load_rules(SHIPPED)

    api = update_config(rules.rules["a3_api"].update)
    worker = update_config(rules.rules["a3_worker"].update)

    assert api == {
        "Parallelism": 1,
        "Delay": 5_000_000_000,
        "FailureAction": "rollback",
        "Monitor": 30_000_000_000,  # the service's override
        "MaxFailureRatio": 0.0,
        "Order": "start-first",
    }
    assert worker["Monitor"] == 15_000_000_000  # the default
