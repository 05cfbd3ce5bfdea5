"""What the package imports: docker-py only where a real Swarm is built, and every import declared."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "webhook_server"


@pytest.mark.parametrize(
    "module", ["webhook_server.app", "webhook_server.cli", "webhook_server.server", "webhook_server.views"]
)
def test_loading_the_app_and_the_cli_does_not_load_docker(module: str) -> None:
    # A fresh interpreter: this test process may have loaded docker for other tests.
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'docker' or m.startswith('docker.')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"webhook_server", "__future__"}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    """Declared distribution name -> its requirement text."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = {}
    for requirement in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert match is not None, requirement
        found[_normalized(match.group(0))] = requirement
    return found


def test_every_imported_distribution_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    providers = {name: distributions.get(name, [name]) for name in _imported_top_level_names()}
    undeclared = {
        name: dists for name, dists in providers.items() if not any(_normalized(d) in declared for d in dists)
    }
    assert undeclared == {}


def test_docker_comes_with_ssh_support() -> None:
    # DOCKER_HOST=ssh://user@manager needs paramiko; without the extra, docker-py fails at connect time.
    assert _declared()["docker"].startswith("docker[ssh]")
