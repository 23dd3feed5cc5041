"""Fixtures for the compatibility suites: one daemon per session, driven by the real clients.

By default a fresh `skiffd` (the .venv console script) runs on a temporary socket, data root and
exec root. With SKIFF_TEST_DOCKER_HOST set, the suites run against that daemon instead, so the
same expectations can be checked on the reference dockerd:

    SKIFF_TEST_DOCKER_HOST=unix:///run/ref-docker/docker.sock .venv/bin/pytest compat-tests

Such a daemon is shared with other users: tests only touch images they create (unique names and a
per-session label) and never prune without a label filter there (see `Daemon.shared`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import docker as docker_sdk
import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
BUSYBOX_TAR = ROOT / ".test-image" / "busybox.tar"
SESSION_LABEL = "org.skiff.test.session"
CASE_LABEL = "org.skiff.test.case"
DOCKER_CLI = (
    "/usr/local/bin/docker" if os.access("/usr/local/bin/docker", os.X_OK) else shutil.which("docker")
)
CLI_TIMEOUT = 60


def load_tool(name: str) -> ModuleType:
    """Import tools/<name>.py (tools/ is scripts, not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mkimage = load_tool("mkimage")

# `make test` runs this directory with --import-mode=importlib (cli/ and dockerpy/ hold files of the
# same name), which does not put conftest on sys.path; test modules may still `from conftest import ...`.
sys.modules.setdefault("conftest", sys.modules[__name__])


@dataclass(frozen=True)
class Daemon:
    """The daemon under test."""

    host: str
    socket: Path
    flavor: str  # "skiff" or "docker" (from the Server header)
    api_version: str  # highest API version it serves
    min_api_version: str
    shared: bool  # True for a daemon given by SKIFF_TEST_DOCKER_HOST
    pid: int | None = None
    log: Callable[[], str] = field(default=lambda: "", compare=False)

    @property
    def is_docker(self) -> bool:
        return self.flavor == "docker"


class Run(NamedTuple):
    rc: int
    stdout: str
    stderr: str


def _probe(host: str, shared: bool, pid: int | None, log: Callable[[], str]) -> Daemon:
    sock = Path(host.removeprefix("unix://"))
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://docker", timeout=30
    ) as c:
        ping = c.get("/_ping")
        version = c.get("/version")
    # Tolerant on purpose: a daemon with a broken /version should fail those tests, not every test.
    try:
        min_api_version = str(version.json()["MinAPIVersion"])
    except (ValueError, KeyError, TypeError):
        min_api_version = "1.24"
    server = ping.headers.get("Server", "")
    flavor = "docker" if server.startswith("Docker/") else "skiff"
    return Daemon(
        host=host,
        socket=sock,
        flavor=flavor,
        api_version=ping.headers.get("Api-Version", "1.50"),
        min_api_version=min_api_version,
        shared=shared,
        pid=pid,
        log=log,
    )


@pytest.fixture(scope="session", autouse=True)
def host_left_as_found() -> Iterator[None]:
    """Set up before, torn down after every test daemon of the session (tools/hoststate.py says
    what is compared and why only the test daemons' own parts of the host)."""
    if os.environ.get("SKIFF_TEST_DOCKER_HOST") or os.geteuid() != 0:
        yield
        return
    hoststate, testdaemon = load_tool("hoststate"), load_tool("testdaemon")
    before = hoststate.capture()
    yield
    problems = hoststate.differences(before, hoststate.capture(), testdaemon.STARTED)
    for d in testdaemon.STARTED:
        if d.exit_code == 0 and (d.leftovers or d.leftover_sandboxes):  # killed ones are exempt
            problems.append(f"{d.bridge}: left {d.leftovers} and sandboxes {d.leftover_sandboxes}")
    assert not problems, "the test daemons changed the host:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    given = os.environ.get("SKIFF_TEST_DOCKER_HOST")
    if given:
        yield _probe(given, shared=True, pid=None, log=lambda: "")
        return
    if os.geteuid() != 0:
        pytest.skip("compat tests start skiffd, which needs root")
    testdaemon = load_tool("testdaemon")
    with testdaemon.SkiffDaemon() as proc:
        yield _probe(proc.host, shared=False, pid=proc.pid, log=proc.log_tail)


@pytest.fixture(scope="session")
def docker_host(daemon: Daemon) -> str:
    return daemon.host


def cli_env(host: str, config_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(
        DOCKER_HOST=host,
        DOCKER_CONFIG=str(config_dir),
        DOCKER_CLI_HINTS="false",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def ok(res: Run) -> str:
    """The stdout of a command that had to succeed; otherwise the assertion shows all it said."""
    assert res.rc == 0, f"rc={res.rc}\nstdout={res.stdout}\nstderr={res.stderr}"
    return res.stdout


def cli_runner(env: dict[str, str]) -> Callable[..., Run]:
    """`run(*args, input=b"...", timeout=60) -> Run(rc, stdout, stderr)`: the real CLI with ``env``."""
    if DOCKER_CLI is None:
        pytest.fail("no docker CLI found (expected /usr/local/bin/docker)")

    def run(
        *args: str | os.PathLike[str],
        input: bytes | None = None,
        timeout: int = CLI_TIMEOUT,
        stdout_file: Path | None = None,
    ) -> Run:
        """stdout_file: send stdout there (binary, e.g. `docker save` to a pipe); Run.stdout is then ""."""
        argv = ["timeout", "-s", "KILL", str(timeout), str(DOCKER_CLI), *map(str, args)]
        stdin = None if input is not None else subprocess.DEVNULL
        with open(stdout_file, "wb") if stdout_file else contextlib.nullcontext() as out:
            proc = subprocess.run(
                argv, input=input, stdin=stdin, stdout=out or subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
        stdout = proc.stdout.decode(errors="replace") if proc.stdout is not None else ""
        return Run(proc.returncode, stdout, proc.stderr.decode(errors="replace"))

    return run


@pytest.fixture(scope="session")
def docker(
    daemon: Daemon, tmp_path_factory: pytest.TempPathFactory, session_token: str
) -> Iterator[Callable[..., Run]]:
    """`docker(*args, input=b"...", timeout=60) -> Run(rc, stdout, stderr)` with the real CLI.

    At the end of the session it removes every image still carrying this session's label.
    """
    run = cli_runner(cli_env(daemon.host, tmp_path_factory.mktemp("docker-config")))
    yield run
    listed = run("images", "-aq", "--no-trunc", "--filter", f"label={SESSION_LABEL}={session_token}")
    for image_id in dict.fromkeys(listed.stdout.split()):
        run("rmi", "-f", image_id)


@pytest.fixture(scope="module")
def busybox(docker: Callable[..., Run], busybox_tar: Path) -> str:
    """busybox:latest loaded into the session's daemon, again for each module (one may remove it)."""
    ok(docker("load", "-i", busybox_tar))
    return "busybox:latest"


@pytest.fixture
def own_daemon(daemon: Daemon, busybox_tar: Path, tmp_path: Path) -> Iterator[tuple[Any, Callable[..., Run]]]:
    """``(proc, run)``: a skiffd of the test's own (tools/testdaemon.py SkiffDaemon) with busybox
    loaded, and the CLI pointed at it, for tests that stop, kill or restart a daemon, which the
    session's one has to survive. The test may stop and start ``proc``; it is always stopped after.
    """
    if daemon.shared:
        pytest.skip("restarts a daemon: needs one started by the test")
    proc = load_tool("testdaemon").SkiffDaemon()
    run = cli_runner(cli_env(proc.host, tmp_path / "own-daemon-config"))
    try:
        proc.start()
        ok(run("load", "-i", busybox_tar))
        yield proc, run
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def dockerpy(daemon: Daemon) -> Iterator[docker_sdk.DockerClient]:
    client = docker_sdk.DockerClient(base_url=daemon.host, version="auto", timeout=CLI_TIMEOUT)
    yield client
    client.close()


@pytest.fixture(scope="session")
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    """Raw HTTP over the daemon's socket; paths are unversioned unless the test adds /vX.Y."""
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://docker", timeout=CLI_TIMEOUT
    ) as client:
        yield client


@pytest.fixture(scope="session")
def busybox_tar() -> Path:
    """The canonical busybox:latest archive (.test-image/busybox.tar), rebuilt if missing."""
    mkimage.write_archive(mkimage.ImageSpec(), BUSYBOX_TAR)
    return BUSYBOX_TAR


@pytest.fixture(scope="session")
def session_token() -> str:
    return secrets.token_hex(4)


@dataclass
class BuiltImage:
    path: Path
    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    epoch: int

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


class Images:
    """Builds uniquely named variants of the busybox image and removes what a test made."""

    _counter = itertools.count()

    def __init__(self, token: str, tmp: Path, docker: Callable[..., Run], daemon: Daemon) -> None:
        self.token = token
        self.tmp = tmp
        self.docker = docker
        self.daemon = daemon
        self.case = f"{token}-{next(self._counter)}"
        self.tracked: list[str] = []

    def repo(self, suffix: str = "img") -> str:
        return f"skifftest-{self.case}-{suffix}"

    @property
    def case_filter(self) -> str:
        return f"label={CASE_LABEL}={self.case}"

    def build(
        self,
        tags: Sequence[str] | None = None,
        labels: dict[str, str] | None = None,
        epoch: int = mkimage.DEFAULT_EPOCH,
        cmd: Sequence[str] = ("sh",),
    ) -> BuiltImage:
        n = next(self._counter)
        tags = (f"{self.repo()}:latest",) if tags is None else tuple(tags)
        all_labels = {
            SESSION_LABEL: self.token,
            CASE_LABEL: self.case,
            "org.skiff.test.n": str(n),
            **(labels or {}),
        }
        spec = mkimage.ImageSpec(tags=tags, labels=all_labels, epoch=epoch, cmd=tuple(cmd))
        path = self.tmp / f"image-{n}.tar"
        image_id = mkimage.write_archive(spec, path)
        self.tracked.append(image_id)
        return BuiltImage(path, image_id, tags, all_labels, epoch)

    def load(self, *args: Any, **kwargs: Any) -> BuiltImage:
        image = self.build(*args, **kwargs)
        res = self.docker("load", "-i", image.path)
        assert res.rc == 0, res
        return image

    def track(self, ref: str) -> str:
        self.tracked.append(ref)
        return ref

    def cleanup(self) -> None:
        for ref in reversed(self.tracked):
            self.docker("rmi", "-f", ref)
        listed = self.docker("images", "-aq", "--no-trunc", "--filter", self.case_filter)
        for image_id in dict.fromkeys(listed.stdout.split()):
            self.docker("rmi", "-f", image_id)


@pytest.fixture
def images(
    session_token: str, tmp_path: Path, docker: Callable[..., Run], daemon: Daemon
) -> Iterator[Images]:
    factory = Images(session_token, tmp_path, docker, daemon)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox layer alone, as a plain tar for `docker import`."""
    path = tmp_path_factory.mktemp("rootfs") / "rootfs.tar"
    path.write_bytes(mkimage.build_layer(mkimage.ImageSpec()))
    return path


def read_saved(path: Path) -> tuple[list[dict[str, Any]], set[str]]:
    """manifest.json and member names of a `docker save` archive."""
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return json.load(member), set(tar.getnames())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything here drives a daemon that mounts overlays and runs runc: root only.
    if not os.environ.get("SKIFF_TEST_DOCKER_HOST"):
        for item in items:
            if item.path.is_relative_to(Path(__file__).parent):
                item.add_marker(pytest.mark.privileged)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if report.failed and isinstance(item, pytest.Function):
        daemon = item.funcargs.get("daemon")
        if isinstance(daemon, Daemon):
            tail = daemon.log()
            if tail:
                report.sections.append(("skiffd log (tail)", tail))
    return report  # type: ignore[return-value]


_container_counter = itertools.count()


class CaseContainers:
    """Uniquely named busybox containers of one case (CLI), all carrying its label (``label``, or
    ``scope`` as a filter); ``cleanup`` force-removes every one, also those a test named itself."""

    def __init__(self, docker: Callable[..., Run], case: str) -> None:
        self.docker = docker
        self.case = case
        self.made: list[str] = []

    @property
    def label(self) -> list[str]:
        return ["--label", f"{CASE_LABEL}={self.case}"]

    @property
    def scope(self) -> list[str]:
        return ["--filter", f"label={CASE_LABEL}={self.case}"]

    def name(self, hint: str) -> str:
        name = f"skifftest-{hint}-{self.case}-{next(_container_counter)}"
        self.made.append(name)
        return name

    def run(self, hint: str, *args: str, cmd: tuple[str, ...] = ("sleep", "600")) -> str:
        name = self.name(hint)
        ok(self.docker("run", "-d", "--name", name, *self.label, *args, "busybox", *cmd))
        return name

    def create(self, hint: str, *args: str, cmd: tuple[str, ...] = ("true",)) -> str:
        name = self.name(hint)
        ok(self.docker("create", "--name", name, *self.label, *args, "busybox", *cmd))
        return name

    def cleanup(self) -> None:
        listed = self.docker("ps", "-aq", "--no-trunc", *self.scope)
        for cid in dict.fromkeys([*listed.stdout.split(), *self.made]):
            self.docker("rm", "-f", cid)


class ContainerNames:
    """Unique container names for one docker-py test; ``cleanup`` force-removes what was named."""

    def __init__(self, token: str, client: docker_sdk.DockerClient) -> None:
        self.prefix = f"skpy-{token}-{next(_container_counter)}"
        self.client = client
        self.made: list[str] = []

    def __call__(self, suffix: str = "c") -> str:
        name = f"{self.prefix}-{suffix}"
        self.made.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.made:
            with contextlib.suppress(docker_sdk.errors.NotFound):
                self.client.api.remove_container(name, force=True)


@pytest.fixture
def names(session_token: str, dockerpy: docker_sdk.DockerClient) -> Iterator[ContainerNames]:
    made = ContainerNames(session_token, dockerpy)
    yield made
    made.cleanup()
