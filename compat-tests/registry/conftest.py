"""Registries for the registry suites: Debian's docker-registry on 127.0.0.1 (plain, htpasswd basic
auth, bearer tokens from our own token server), each started once per session and killed by PID
in its finalizer. Every name pushed is unique to the test (``images.repo()``), so the sessions'
registries are shared safely."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent


def _load_regkit() -> ModuleType:
    if "regkit" in sys.modules:
        return sys.modules["regkit"]
    spec = importlib.util.spec_from_file_location("regkit", HERE / "regkit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["regkit"] = module
    spec.loader.exec_module(module)
    return module


regkit = _load_regkit()
USERS = regkit.TEST_USERS


def _need_registry() -> None:
    if not os.access(regkit.DOCKER_REGISTRY, os.X_OK):
        pytest.fail(f"{regkit.DOCKER_REGISTRY} missing: `make install` installs Debian's docker-registry")


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[regkit.Registry]:
    _need_registry()
    registry = regkit.Registry(tmp_path_factory.mktemp("registry-plain"))
    try:
        yield registry.start()
    finally:
        registry.close()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[regkit.Registry]:
    _need_registry()
    registry = regkit.Registry(tmp_path_factory.mktemp("registry-basic"), auth="htpasswd", users=USERS)
    try:
        yield registry.start()
    finally:
        registry.close()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[regkit.TokenServer]:
    server = regkit.TokenServer(tmp_path_factory.mktemp("token-server"), USERS)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def bearer_registry(
    tmp_path_factory: pytest.TempPathFactory, token_server: regkit.TokenServer
) -> Iterator[regkit.Registry]:
    _need_registry()
    registry = regkit.Registry(tmp_path_factory.mktemp("registry-bearer"), auth="token", token=token_server)
    try:
        yield registry.start()
    finally:
        registry.close()


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[regkit.Registry]:
    """A registry of the test's own (to be killed and restarted)."""
    _need_registry()
    registry = regkit.Registry(tmp_path / "registry")
    try:
        yield registry.start()
    finally:
        registry.close()


@pytest.fixture
def uploader(plain_registry: regkit.Registry) -> Iterator[regkit.Uploader]:
    up = regkit.Uploader(plain_registry.host)
    try:
        yield up
    finally:
        up.close()
