"""ContainerService on the FakeRuntime: create, start, exits, waits, stop/kill, restart policies,
AutoRemove, removal texts, attach sessions and the reconciliation at daemon start (no root needed).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from engine import errdefs
from engine.containers import restore as restore_module
from engine.containers.attach import AttachOptions, AttachSession, LogsOptions, open_logs
from engine.containers.model import Container
from engine.containers.service import ContainerService, restart_policy_says
from engine.containers.store import ContainerStore
from engine.events import Event, EventBus
from runtime.fake import FakeContext, FakeRuntime
from runtime.types import StartError

IMAGE_ID = "sha256:" + "a" * 64
IMAGE_CONFIG = {
    "Env": ["PATH=/usr/bin:/bin", "FROM_IMAGE=1"],
    "Cmd": ["sh"],
    "WorkingDir": "/work",
    "Labels": {"img": "yes", "both": "image"},
    "StopSignal": "",
}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _stubborn(ctx: FakeContext) -> int:
    """Ignores SIGTERM (like `sleep` as PID 1) and sleeps for argv[1] seconds."""
    ctx.trap(signal.SIGTERM)
    await ctx.sleep(float(ctx.args[1]) if len(ctx.args) > 1 else 300)
    return 0


async def _chatty(ctx: FakeContext) -> int:
    """Prints argv[1] lines, one every 10 ms."""
    for i in range(int(ctx.args[1])):
        await ctx.write(f"line {i}\n".encode())
        await asyncio.sleep(0.01)
    return 0


async def _oom(ctx: FakeContext) -> int:
    await asyncio.sleep(0)
    ctx.oom()


class FakeImages:
    async def resolve(self, ref: str) -> Any:
        if ref not in ("busybox", "busybox:latest"):
            name = ref if ":" in ref else ref + ":latest"
            raise errdefs.no_such_image(name)
        return SimpleNamespace(id=IMAGE_ID)

    def image_config(self, image: Any) -> dict[str, Any]:
        return json.loads(json.dumps(IMAGE_CONFIG))

    def top_chain_id(self, image: Any) -> str | None:
        return None


class FakeLayers:
    def __init__(self, tmp: Path) -> None:
        self.rw: set[str] = set()
        upper = tmp / "upper"
        self.snapshotter = SimpleNamespace(
            mounts=lambda key: [], upperdir=lambda key: upper / key, lowerdirs=lambda key: []
        )

    def prepare_rw(self, key: str, parent: str | None) -> list[Any]:
        self.rw.add(key)
        (self.snapshotter.upperdir(key)).mkdir(parents=True)
        return []

    def remove_rw(self, key: str) -> None:
        if key not in self.rw:
            raise errdefs.NotFound(f"snapshot {key} does not exist")
        self.rw.discard(key)


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.runtime = FakeRuntime({"stubborn": _stubborn, "chatty": _chatty, "oom": _oom})
        self.bus = EventBus()
        self.layers = FakeLayers(tmp)
        self.service = self.new_service()

    def new_service(self) -> ContainerService:
        return ContainerService(
            store=ContainerStore(self.tmp / "containers"),
            images=cast(Any, FakeImages()),
            layers=cast(Any, self.layers),
            runtime=self.runtime,
            events=self.bus,
            exec_root=self.tmp / "exec",
        )

    async def create(self, name: str | None = None, **body: Any) -> Container:
        body.setdefault("Image", "busybox")
        c, warnings = await self.service.create(name, body)
        assert warnings == []
        return c

    async def run(self, cmd: list[str], **body: Any) -> Container:
        c = await self.create(None, Cmd=cmd, **body)
        await self.service.start(c.id)
        return c

    def events(self, cid: str) -> list[str]:
        sub = self.bus.subscribe(since=0)
        try:
            return [
                e.action if e.action != "kill" else f"kill:{e.attributes['signal']}"
                for e in sub.backlog
                if e.actor_id == cid
            ]
        finally:
            sub.close()

    def event(self, cid: str, action: str) -> Event:
        sub = self.bus.subscribe(since=0)
        try:
            return [e for e in sub.backlog if e.actor_id == cid and e.action == action][-1]
        finally:
            sub.close()

    async def close(self) -> None:
        await self.service.shutdown()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def with_harness(tmp: Path, body: Any) -> Any:
    async def main() -> Any:
        h = Harness(tmp)
        try:
            return await body(h)
        finally:
            await h.close()

    return run(main())


def on_disk(h: Harness, cid: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((h.tmp / "containers" / cid / "config.v2.json").read_text())
    return record


# --- create --------------------------------------------------------------------------------------


def test_create_merges_image_defaults_and_fills_dockerd_fields(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create("web", Env=["FROM_IMAGE=2", "MINE=1"], Labels={"both": "container"})
        assert c.name == "/web"
        assert c.config["Image"] == "busybox"  # as the client gave it
        assert c.image_id == IMAGE_ID
        assert c.config["Cmd"] == ["sh"] and (c.path, c.args) == ("sh", [])
        assert c.config["Env"] == ["PATH=/usr/bin:/bin", "FROM_IMAGE=2", "MINE=1"]
        assert c.config["WorkingDir"] == "/work"
        assert c.config["Labels"] == {"img": "yes", "both": "container"}
        assert c.config["Hostname"] == c.id[:12]
        assert c.config["Tty"] is False and c.config["OpenStdin"] is False
        assert c.host_config["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
        assert c.host_config["NetworkMode"] == "bridge"
        assert c.host_config["LogConfig"] == {"Type": "json-file", "Config": {}}
        assert c.state.status == "created" and not c.state.has_been_started
        assert c.id in h.layers.rw
        assert on_disk(h, c.id)["state"]["status"] == "created"
        assert c.host_config["IpcMode"] == "private" and c.host_config["CgroupnsMode"] in ("host", "private")
        assert "/proc/kcore" in c.host_config["MaskedPaths"] and "/proc/sys" in c.host_config["ReadonlyPaths"]
        assert "ExposedPorts" not in c.config and c.config["Volumes"] is None
        # like dockerd, the per-container files and the log exist from the first start on
        assert (c.hostname_path, c.hosts_path, c.resolv_conf_path, c.log_path) == ("", "", "", "")
        assert h.events(c.id) == ["create"]
        await h.service.start(c.id)
        assert Path(c.hostname_path).read_text() == c.id[:12] + "\n"
        assert Path(c.log_path).name == f"{c.id}-json.log"
        await h.service.wait(c.id, "not-running")  # the image's `sh` exits at once here

    with_harness(tmp, body)


def test_create_refuses_a_taken_name_with_dockerd_text_and_leaves_nothing(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        first = await h.create("dup")
        with pytest.raises(errdefs.Conflict) as err:
            await h.create("/dup")
        assert err.value.message == (
            f'Conflict. The container name "/dup" is already in use by container "{first.id}". '
            "You have to remove (or rename) that container to be able to reuse that name."
        )
        assert h.layers.rw == {first.id}
        assert [p.name for p in (h.tmp / "containers").iterdir()] == [first.id]

    with_harness(tmp, body)


def test_create_validation_errors(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(errdefs.InvalidParameter, match=r"Invalid container name \(-x\)"):
            await h.create("-x")
        with pytest.raises(errdefs.NotFound, match=r"^No such image: nope:latest$"):
            await h.create(None, Image="nope")
        with pytest.raises(errdefs.InvalidParameter, match=r"^can't create 'AutoRemove' container with"):
            await h.create(None, HostConfig={"AutoRemove": True, "RestartPolicy": {"Name": "always"}})
        assert h.layers.rw == set()

    with_harness(tmp, body)


# --- start, exit, wait -----------------------------------------------------------------------------


def test_run_records_exit_logs_and_events_in_dockerd_order(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create(None, Cmd=["sh", "-c", "echo hello; echo oops >&2; exit 3"])
        waiter = h.service.wait(c.id, "next-exit")
        await h.service.start(c.id)
        assert (await waiter).status_code == 3
        assert c.state.status == "exited" and c.state.exit_code == 3 and not c.state.running
        assert on_disk(h, c.id)["state"]["exit_code"] == 3
        assert h.events(c.id) == ["create", "start", "die"]
        assert h.event(c.id, "die").attributes["exitCode"] == "3"
        _, entries = open_logs(h.service, c.id, LogsOptions(stdout=True, stderr=True))
        assert [item async for batch in entries for item in batch] == [
            ("stdout", b"hello\n"),
            ("stderr", b"oops\n"),
        ]
        assert not (h.tmp / "exec" / "bundles" / c.id).exists()
        # not-running on an exited container answers at once with its code
        assert (await h.service.wait(c.id, None)).status_code == 3

    with_harness(tmp, body)


def test_wait_conditions(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create(None, Cmd=["sleep", "0.1"])
        created = h.service.wait(c.id, "not-running")
        assert created.done() and created.result().status_code == 0
        next_exit = h.service.wait(c.id, "next-exit")
        removed = h.service.wait(c.id, "removed")
        with pytest.raises(errdefs.InvalidParameter, match=r'^invalid condition: "bogus"$'):
            h.service.wait(c.id, "bogus")
        with pytest.raises(errdefs.NotFound, match=r"^No such container: nope$"):
            h.service.wait("nope", None)
        await h.service.start(c.id)
        running = h.service.wait(c.id, "not-running")
        assert not running.done()
        assert (await next_exit).status_code == 0
        assert (await running).status_code == 0
        assert not removed.done()
        await h.service.remove(c.id)
        assert (await removed).status_code == 0
        assert h.events(c.id)[-1] == "destroy"

    with_harness(tmp, body)


def test_start_twice_is_not_modified_and_failed_start_keeps_created_status(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["sleep", "5"])
        with pytest.raises(errdefs.NotModified):
            await h.service.start(c.id)
        await h.service.kill(c.id)
        bad = await h.create(None, Cmd=["nope"])
        with pytest.raises(StartError, match="executable file not found") as err:
            await h.service.start(bad.id)
        assert err.value.exit_code == 127
        assert bad.state.status == "created" and bad.state.exit_code == 127
        assert "executable file not found" in bad.state.error
        assert not (h.tmp / "exec" / "bundles" / bad.id).exists()

    with_harness(tmp, body)


def test_oom_is_recorded(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["oom"])
        assert (await h.service.wait(c.id, "not-running")).status_code == 137
        assert c.state.oom_killed and c.state.exit_code == 137
        assert h.events(c.id)[-2:] == ["oom", "die"]

    with_harness(tmp, body)


# --- stop / kill / restart -------------------------------------------------------------------------


def test_stop_escalates_to_sigkill_after_the_timeout(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["stubborn"])
        await asyncio.sleep(0.05)  # let it install its SIGTERM trap
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await h.service.stop(c.id, timeout=1)
        assert 0.9 < loop.time() - t0 < 5
        assert c.state.exit_code == 137 and c.state.status == "exited"
        assert h.events(c.id) == ["create", "start", "kill:15", "kill:9", "die", "stop"]
        with pytest.raises(errdefs.NotModified):
            await h.service.stop(c.id)

    with_harness(tmp, body)


def test_stop_uses_the_stop_signal_and_records_128_plus_signo(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["sleep", "30"], StopSignal="SIGINT")
        await h.service.stop(c.id)
        assert c.state.exit_code == 130
        assert c.state.manually_stopped

    with_harness(tmp, body)


def test_kill_texts_and_waiting(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["sleep", "30"])
        with pytest.raises(errdefs.InvalidParameter, match=r"^Invalid signal: NOPE$"):
            await h.service.kill(c.id, "NOPE")
        await h.service.kill(c.id, "WINCH")  # ignored by default: still running
        assert c.state.running
        await h.service.kill(c.id)  # SIGKILL waits for the exit, like dockerd's Kill
        assert c.state.status == "exited" and c.state.exit_code == 137
        with pytest.raises(errdefs.Conflict) as err:
            await h.service.kill(c.id, "TERM")
        assert err.value.message == f"container {c.id} is not running"

    with_harness(tmp, body)


def test_resize_needs_a_running_container(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        idle = await h.create(None, Cmd=["sleep", "30"])
        with pytest.raises(errdefs.Conflict) as err:
            await h.service.resize(idle.id, 24, 80)  # dockerd 28: no task, no resize
        assert err.value.message == f"container {idle.id} is not running"
        c = await h.run(["sleep", "30"])
        await h.service.resize(c.id, 24, 80)  # no TTY: nothing to size, still 200 and an event
        assert h.event(c.id, "resize").attributes["height"] == "24"
        await h.service.kill(c.id)
        with pytest.raises(errdefs.Conflict):
            await h.service.resize(c.id, 24, 80)

    with_harness(tmp, body)


def test_predefined_network_ids_are_filled_at_start(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        h.service.network_ids = {"bridge": "b" * 64, "none": "n" * 64}
        c = await h.create(None, Cmd=["true"])
        assert c.network_settings["Networks"]["bridge"]["NetworkID"] == ""  # as dockerd before a start
        waiting = h.service.wait(c.id, "next-exit")
        await h.service.start(c.id)
        await waiting
        assert c.network_settings["Networks"]["bridge"]["NetworkID"] == "b" * 64  # kept after the exit
        assert on_disk(h, c.id)["network_settings"]["Networks"]["bridge"]["NetworkID"] == "b" * 64
        other = await h.create(None, Cmd=["true"], HostConfig={"NetworkMode": "none"})
        await h.service.start(other.id)
        assert other.network_settings["Networks"]["none"]["NetworkID"] == "n" * 64

    with_harness(tmp, body)


def test_restart_stops_and_starts_again(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["sleep", "30"])
        first_pid = c.state.pid
        await h.service.restart(c.id, timeout=1)
        assert c.state.running and c.state.pid != first_pid
        assert h.events(c.id)[2:] == ["kill:15", "die", "stop", "start", "restart"]
        await h.service.kill(c.id)

    with_harness(tmp, body)


# --- restart policies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "code", "count", "manual", "expected"),
    [
        ({"Name": "no"}, 1, 0, False, False),
        ({"Name": ""}, 1, 0, False, False),
        ({"Name": "always"}, 0, 5, True, True),
        ({"Name": "unless-stopped"}, 0, 0, False, True),
        ({"Name": "unless-stopped"}, 0, 0, True, False),
        ({"Name": "on-failure"}, 0, 0, False, False),
        ({"Name": "on-failure"}, 1, 99, True, True),
        ({"Name": "on-failure", "MaximumRetryCount": 2}, 1, 1, False, True),
        ({"Name": "on-failure", "MaximumRetryCount": 2}, 1, 2, False, False),
    ],
)
def test_restart_policy_decision(
    policy: dict[str, Any], code: int, count: int, manual: bool, expected: bool
) -> None:
    c = Container(
        id="x" * 64, name="/x", created="", image_id="", path="", args=[], config={},
        host_config={"RestartPolicy": policy}, restart_count=count,
    )  # fmt: skip
    assert restart_policy_says(c, code, manual) is expected


def test_on_failure_restarts_with_backoff_until_the_limit(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create(
            None,
            Cmd=["sh", "-c", "exit 1"],
            HostConfig={"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}},
        )
        first = h.service.wait(c.id, "next-exit")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await h.service.start(c.id)
        assert (await first).status_code == 1  # a waiter fires on the first exit (SetRestarting)
        # "die" is published after the final state is saved (as dockerd does), so wait for both.
        for _ in range(300):
            if c.state.status == "exited" and h.events(c.id).count("die") == 3:
                break
            await asyncio.sleep(0.01)
        # 100 ms then 200 ms of backoff between the three runs
        assert loop.time() - t0 >= 0.29
        assert c.state.status == "exited" and c.restart_count == 2 and c.state.exit_code == 1
        assert h.events(c.id).count("start") == 3 and h.events(c.id).count("die") == 3
        # a manual start resets the count
        await h.service.start(c.id)
        assert c.restart_count == 0

    with_harness(tmp, body)


def test_always_restarts_until_killed_and_stop_cancels_a_pending_restart(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["sh", "-c", "sleep 0.05; exit 2"], HostConfig={"RestartPolicy": {"Name": "always"}})
        for _ in range(300):
            if c.restart_count >= 2:
                break
            await asyncio.sleep(0.01)
        assert c.restart_count >= 2
        while not c.state.restarting:
            await asyncio.sleep(0.005)
        assert c.state.running and c.state.status == "restarting"  # dockerd: Running stays true
        await h.service.stop(c.id)
        assert c.state.status == "exited" and not c.state.running and c.state.exit_code == 2
        count = c.restart_count
        await asyncio.sleep(0.5)
        assert c.restart_count == count and c.state.status == "exited"
        assert c.state.manually_stopped

    with_harness(tmp, body)


# --- AutoRemove ---------------------------------------------------------------------------------------


def test_auto_remove_after_exit(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create(None, Cmd=["echo", "bye"], HostConfig={"AutoRemove": True})
        removed = h.service.wait(c.id, "removed")
        await h.service.start(c.id)
        assert (await removed).status_code == 0
        assert not h.service.store_has(c.id)
        assert not (h.tmp / "containers" / c.id).exists() and c.id not in h.layers.rw
        assert h.events(c.id) == ["create", "start", "die", "destroy"]

    with_harness(tmp, body)


def test_auto_remove_when_start_fails(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create(None, Cmd=["nope"], HostConfig={"AutoRemove": True})
        removed = h.service.wait(c.id, "removed")
        with pytest.raises(StartError):
            await h.service.start(c.id)
        # removed before start answers: the CLI then finds its wait already answered
        assert removed.done()
        assert not h.service.store_has(c.id)

    with_harness(tmp, body)


def test_restart_of_an_auto_remove_container_keeps_it(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["sleep", "30"], HostConfig={"AutoRemove": True})
        await h.service.restart(c.id, timeout=1)
        assert h.service.store_has(c.id) and c.state.running
        await h.service.kill(c.id)
        for _ in range(100):
            if not h.service.store_has(c.id):
                break
            await asyncio.sleep(0.01)
        assert not h.service.store_has(c.id)

    with_harness(tmp, body)


# --- remove ------------------------------------------------------------------------------------------------


def test_remove_running_needs_force(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["sleep", "30"])
        with pytest.raises(errdefs.Conflict) as err:
            await h.service.remove(c.id)
        assert err.value.message == (
            f'cannot remove container "{c.name}": container is running: '
            "stop the container before removing or force remove"
        )
        await h.service.remove(c.id, force=True)
        assert not h.service.store_has(c.id)
        assert h.events(c.id)[-2:] == ["die", "destroy"]
        with pytest.raises(errdefs.NotFound, match=f"^No such container: {c.id[:12]}$"):
            await h.service.remove(c.id[:12])

    with_harness(tmp, body)


# --- attach ----------------------------------------------------------------------------------------------


class Conn:
    """The client side of an attach, as far as the session reads it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int) -> bytes:
        await asyncio.sleep(0.01)
        return self.chunks.pop(0) if self.chunks else b""


def test_attach_before_start_sees_all_output_and_stdin_once(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create(None, Cmd=["cat"], OpenStdin=True, StdinOnce=True, AttachStdin=True)
        session = AttachSession.open(
            h.service, c.id, AttachOptions(stdin=True, stdout=True, stderr=True, stream=True)
        )
        got: list[tuple[str, bytes]] = []

        async def write(stream: str, data: bytes) -> None:
            got.append((stream, data))

        runner = asyncio.ensure_future(session.run(Conn([b"abc\n", b"def\n"]), write))
        await asyncio.sleep(0.05)
        await h.service.start(c.id)
        await asyncio.wait_for(runner, 5)
        assert b"".join(d for _, d in got) == b"abc\ndef\n"
        # StdinOnce: the client's EOF closed cat's stdin, it exited, and the exit was recorded first
        assert c.state.status == "exited" and c.state.exit_code == 0
        assert h.events(c.id)[:3] == ["create", "attach", "start"]

    with_harness(tmp, body)


def test_attach_without_stdin_once_ends_at_client_eof_and_container_keeps_running(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["cat"], OpenStdin=True)
        session = AttachSession.open(h.service, c.id, AttachOptions(stdin=True, stdout=True, stream=True))

        async def write(stream: str, data: bytes) -> None:
            pass

        await asyncio.wait_for(session.run(Conn([b"x\n"]), write), 5)
        assert c.state.running
        await h.service.kill(c.id)

    with_harness(tmp, body)


def test_attach_refusals(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create("att")
        with pytest.raises(errdefs.InvalidParameter, match=r"^Invalid detach keys \(bogus-key\) provided$"):
            AttachSession.open(h.service, c.id, AttachOptions(stream=True, detach_keys="bogus-key"))
        with pytest.raises(errdefs.NotFound):
            AttachSession.open(h.service, "nope", AttachOptions(stream=True))

    with_harness(tmp, body)


def test_logs_validation_order(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(errdefs.InvalidParameter, match=r"^Bad parameters: you must choose at least one"):
            open_logs(h.service, "nope", LogsOptions())
        c = await h.create(None, HostConfig={"LogConfig": {"Type": "none", "Config": {}}})
        with pytest.raises(errdefs.NotImplemented_):
            open_logs(h.service, c.id, LogsOptions(stdout=True))

    with_harness(tmp, body)


def test_logs_follow_ends_when_the_container_stops(tmp: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.run(["chatty", "20"])
        _, entries = open_logs(h.service, c.id, LogsOptions(stdout=True, follow=True))

        async def collect(it: AsyncIterator[list[tuple[str, bytes]]]) -> list[bytes]:
            return [data async for batch in it for _, data in batch]

        lines = await asyncio.wait_for(collect(entries), 5)
        assert lines == [f"line {i}\n".encode() for i in range(20)]

    with_harness(tmp, body)


# --- shutdown and restore ---------------------------------------------------------------------------------


def test_shutdown_stops_containers_without_marking_them_stopped_by_hand(tmp: Path) -> None:
    async def main() -> None:
        h = Harness(tmp)
        c = await h.run(["sleep", "30"], HostConfig={"RestartPolicy": {"Name": "unless-stopped"}})
        await h.service.shutdown()
        assert c.state.status == "exited" and c.state.exit_code == 143
        assert not c.state.manually_stopped and c.restart_count == 0

        # The next daemon life starts it again.
        h.service = h.new_service()
        await restore_module.restore(h.service)
        again = h.service.get(c.id)
        assert again.state.running
        await h.service.kill(c.id)
        await h.service.shutdown()

    run(main())


def test_restore_reconciles_containers_recorded_running(tmp: Path) -> None:
    async def main() -> None:
        h = Harness(tmp)
        plain = await h.run(["sleep", "30"])
        alive = await h.run(["sleep", "30"])
        always = await h.run(["sleep", "30"], HostConfig={"RestartPolicy": {"Name": "always"}})
        rm = await h.run(["sleep", "30"], HostConfig={"AutoRemove": True})
        # The daemon "dies": nothing is stopped, the records still say running.
        for task in list(h.service._background):
            task.cancel()
        h.runtime.tasks.pop(plain.id)  # died unseen: the runtime lost it
        (h.tmp / "exec" / "bundles" / "orphan" / "rootfs").mkdir(parents=True)

        h.service = h.new_service()
        await restore_module.restore(h.service)
        p = h.service.get(plain.id)
        assert p.state.status == "exited" and p.state.exit_code == 255 and not p.state.running
        # Still alive in the runtime: killed here, so it exits as SIGKILL does.
        k = h.service.get(alive.id)
        assert k.state.status == "exited" and k.state.exit_code == 137 and alive.id not in h.runtime.tasks
        a = h.service.get(always.id)
        assert a.state.running and ("cleanup_orphan", always.id) in h.runtime.calls
        assert not h.service.store_has(rm.id)
        assert not (h.tmp / "exec" / "bundles" / "orphan").exists()
        await h.service.shutdown()

    run(main())
