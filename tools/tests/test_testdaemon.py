"""tools/testdaemon.py: start, ping, stop by PID and clean up, with a stand-in for skiffd."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from ipaddress import IPv4Network
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parent.parent

# Serves just enough HTTP for /_ping on the socket given by -H; with FAKE_IGNORE_TERM it ignores SIGTERM.
FAKE_SKIFFD = textwrap.dedent(
    """\
    #!{python}
    import asyncio, os, signal, sys
    args = sys.argv[1:]
    sock = args[args.index("-H") + 1].removeprefix("unix://")
    data_root = args[args.index("--data-root") + 1]
    os.makedirs(data_root, exist_ok=True)
    if os.environ.get("FAKE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FAKE_MOUNT"):
        os.makedirs(data_root + "/m", exist_ok=True)
        os.system("mount -t tmpfs tmpfs " + data_root + "/m")
    async def handle(reader, writer):
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            if not head:
                break
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nApi-Version: 1.50\\r\\n\\r\\nOK")
            await writer.drain()
    async def main():
        server = await asyncio.start_unix_server(handle, sock)
        async with server:
            await server.serve_forever()
    asyncio.run(main())
    """
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("testdaemon", TOOLS / "testdaemon.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("testdaemon", module)
    spec.loader.exec_module(module)
    return module


testdaemon = _load()


@pytest.fixture
def fake_skiffd(tmp_path: Path) -> Path:
    path = tmp_path / "fake-skiffd"
    path.write_text(FAKE_SKIFFD.format(python=sys.executable))
    path.chmod(0o755)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state letter is Z.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_start_ping_stop_cleans_up(fake_skiffd: Path) -> None:
    daemon = testdaemon.SkiffDaemon(binary=fake_skiffd, start_timeout=10)
    with daemon:
        assert daemon.host == f"unix://{daemon.socket}"
        assert testdaemon.ping(daemon.socket)
        assert (daemon.data_root).is_dir()
        pid = daemon.pid
    assert not _alive(pid)
    assert not daemon.tmp.exists()


def test_sigkill_after_grace(fake_skiffd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_IGNORE_TERM", "1")
    daemon = testdaemon.SkiffDaemon(binary=fake_skiffd, start_timeout=10).start()
    code = daemon.stop(grace=0.5)
    assert code == -9
    assert not daemon.tmp.exists()


def test_failed_start_reports_log_and_cleans_up(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    broken.chmod(0o755)
    daemon = testdaemon.SkiffDaemon(binary=broken, start_timeout=5)
    with pytest.raises(RuntimeError, match="exited with 3:\nboom"), daemon:
        pass
    assert not daemon.tmp.exists()


@pytest.mark.privileged
def test_unmounts_under_data_root(fake_skiffd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    monkeypatch.setenv("FAKE_MOUNT", "1")
    daemon = testdaemon.SkiffDaemon(binary=fake_skiffd, start_timeout=10)
    with daemon:
        mounted = subprocess.run(["findmnt", "-n", str(daemon.data_root / "m")], capture_output=True)
        assert mounted.returncode == 0
    assert testdaemon._mounts_below(daemon.tmp) == []
    assert not daemon.tmp.exists()


def test_network_isolation_settings(tmp_path: Path) -> None:
    """Its own bridge, chain prefix and subnets; no ip_forward change; the outside rejected. The
    daemon.json it writes is one skiffd accepts."""
    from api.flags import load_config

    a, b = testdaemon.SkiffDaemon(), testdaemon.SkiffDaemon()
    try:
        assert a.bridge != b.bridge and a.bridge.startswith("skd") and len(a.bridge) <= 15
        assert a.marks.prefix not in ("SKIFF", b.marks.prefix)
        assert a.link_alias == f"skiff:{a.marks.prefix}" and f"{a.marks.prefix}-FORWARD" in a.chain_names
        config_path = tmp_path / "daemon.json"
        config_path.write_text(json.dumps(a.daemon_json()))
        config = load_config(["--config-file", str(config_path)])
        assert config.bridge == a.bridge and config.ip_forward is False and config.iptables is True
        assert str(config.default_address_pools[0].base) == a.address_pool
        base = config.default_address_pools[0].base
        assert base.prefixlen == 16 and base.subnet_of(IPv4Network("10.0.0.0/8"))
        assert 176 <= base.network_address.packed[1] < 208
        assert config.outbound_reject_interface == testdaemon.outside_interface()
    finally:
        a.stop()
        b.stop()


def test_outside_interface_is_the_default_routes() -> None:
    routes = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout
    expected = routes.split()[routes.split().index("dev") + 1] if "dev" in routes.split() else None
    assert testdaemon.outside_interface() == expected
    assert (
        testdaemon.OFFLINE_ENV["HTTP_PROXY"] == testdaemon.OFFLINE_ENV["HTTPS_PROXY"] == "http://127.0.0.1:9"
    )
    assert testdaemon.OFFLINE_ENV["NO_PROXY"] == "127.0.0.1,localhost"
