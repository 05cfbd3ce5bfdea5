"""The HTTP API's contract: openapi.yaml lists exactly the routes the app has, and schema-driven fuzzing
(schemathesis, on hypothesis) finds no 5xx and no answer that does not conform to the document."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import negative_data_rejection
from schemathesis.generation import GenerationMode

from tests.fakes import FakeSwarm
from tests.server import API_TOKEN, WEBHOOK_TOKEN
from tests.unit.test_proxy_reload import FakeSwarm as FakeNginx
from tests.unit.test_proxy_reload import task
from tests.unit.test_views import RULES, settings_for
from webhook_server.app import create_app
from webhook_server.proxy.reload import NginxSwarm
from webhook_server.rules import RulesSource
from webhook_server.views import openapi_document

# Cases per operation and mode (valid, and invalid data); nine operations make well over 2,000 in all.
EXAMPLES = 200


def documented_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }


def app_routes(app: Flask) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        found.update((method, path) for method in rule.methods or () if method not in ("HEAD", "OPTIONS"))
    return found


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    root = tmp_path_factory.mktemp("openapi")
    rules_path = root / "deploy_rules.yaml"
    rules_path.write_text(RULES)
    swarm = FakeSwarm()
    for name in ("api", "worker", "web"):
        swarm.add_service(name, f"reg:5000/acme/{name}:1.0.0")

    @contextlib.contextmanager
    def nginx() -> Iterator[NginxSwarm]:
        yield FakeNginx(tasks=[task(1)])

    yield create_app(
        settings_for(root, rules_path, WEBHOOK_RATE_LIMIT="0", WEBHOOK_AUTH_FAILURE_LIMIT="0"),
        swarm=swarm,
        rules=RulesSource(rules_path),
        proxy_swarm=nginx,
    )


def test_the_document_lists_exactly_the_routes_the_app_has(app: Flask) -> None:
    assert app_routes(app) == documented_routes()


def test_the_served_document_is_the_file(app: Flask) -> None:
    assert app.test_client().get("/openapi.json").get_json() == openapi_document()


# The document's own route is not fuzzed (schemathesis leaves out the schema it was loaded from).
OPERATIONS = sorted(f"{method} {path}" for method, path in documented_routes() if path != "/openapi.json")
# Operations without any input have no invalid variant to generate.
WITHOUT_INPUT = {"GET /healthz", "GET /readyz", "GET /metrics"}
CASES_RUN: list[int] = []


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_fuzz(app: Flask, operation: str, mode: GenerationMode) -> None:
    """Generated requests for one operation, with valid tokens (so that the checks reach the handlers);
    every answer must be documented, conform to its schema, and not be a 5xx other than Docker's."""
    if mode is GenerationMode.NEGATIVE and operation in WITHOUT_INPUT:
        CASES_RUN.append(0)
        return
    loaded = schemathesis.openapi.from_wsgi("/openapi.json", app)
    [found] = [r.ok() for r in loaded.get_all_operations() if r.ok().label == operation]
    count = 0

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(case=found.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal count
        count += 1
        if case.path_parameters and "token" in case.path_parameters:
            case.path_parameters["token"] = WEBHOOK_TOKEN
        # Invalid data must not break anything or get an undocumented answer; a query parameter of the
        # wrong JSON type arrives as text all the same, so "invalid data accepted" is not a failure here.
        excluded = [negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
        response = case.call_and_validate(headers={"Authorization": f"Bearer {API_TOKEN}"}, excluded_checks=excluded)
        assert response.status_code < 500 or response.status_code in (502, 503, 504), response.text

    run()
    CASES_RUN.append(count)
    print(f"{operation} ({mode.value}): {count} cases")
    assert count > 0


def test_enough_cases_ran() -> None:
    """The README states the figure: at least 2,000 generated requests, none answered with a 5xx."""
    if len(CASES_RUN) == 2 * len(OPERATIONS):
        assert sum(CASES_RUN) >= 2000, CASES_RUN
