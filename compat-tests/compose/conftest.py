"""Fixtures for the compose smoke suite: a session test image and per-test compose projects.

Every scenario is a directory here with a compose.yaml that names its image `${SKIFF_TEST_IMAGE}`
(the busybox test image under a per-session tag: skiff has no /build, so nothing is built). The
`project` fixture copies a scenario, runs the real `docker compose` on it under a unique project
name and, at teardown, always runs `down -v --remove-orphans` and removes what still carries the
project's label.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent


def _root_conftest() -> ModuleType:
    # pytest drops sys.modules["conftest"] before importing a conftest outside a package (this one),
    # so the name compat-tests/conftest.py registered for `from conftest import ...` is gone here.
    root = HERE.parent / "conftest.py"
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(root):
            sys.modules["conftest"] = module
            return module
    raise RuntimeError(f"{root} was not loaded before {__file__}")


_root = _root_conftest()
Daemon = _root.Daemon
Images = _root.Images
Run = _root.Run
cli_env = _root.cli_env


def _load_composekit() -> ModuleType:
    if "composekit" in sys.modules:
        return sys.modules["composekit"]
    spec = importlib.util.spec_from_file_location("composekit", HERE / "composekit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["composekit"] = module
    spec.loader.exec_module(module)
    return module


composekit = _load_composekit()
_counter = itertools.count()


@pytest.fixture(scope="session")
def compose_image(
    session_token: str, tmp_path_factory: pytest.TempPathFactory, docker: Callable[..., Run], daemon: Daemon
) -> Iterator[str]:
    """The busybox test image under a tag of this session's own; removed at the end."""
    factory = Images(session_token, tmp_path_factory.mktemp("compose-image"), docker, daemon)
    tag = f"skifftest-{session_token}-compose:latest"
    factory.load(tags=(tag,))
    yield tag
    factory.cleanup()


@pytest.fixture
def project(
    daemon: Daemon,
    compose_image: str,
    session_token: str,
    tmp_path: Path,
) -> Iterator[Callable[..., composekit.Project]]:
    """`project("scenario", VAR="value", ...)`: a fresh compose project of that scenario."""
    made: list[composekit.Project] = []

    def make(scenario: str, **env: str) -> composekit.Project:
        n = next(_counter)
        name = f"skc-{session_token}-{n}-{scenario}"
        full_env = cli_env(daemon.host, tmp_path / f"docker-config-{n}")
        full_env.update(SKIFF_TEST_IMAGE=compose_image, COMPOSE_PROJECT_NAME=name, **env)
        proj = composekit.Project(name, scenario, tmp_path / f"{scenario}-{n}", full_env)
        made.append(proj)
        return proj

    yield make
    for proj in reversed(made):
        proj.cleanup()
