"""ExecService on the FakeRuntime: records, dockerd's texts, exit code before the stream ends, resize."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from engine import errdefs, ids
from engine.containers import exec as exec_module
from engine.containers.exec import ExecRecord, ExecService, ExecSession
from engine.containers.live import LiveContainer
from engine.containers.model import Container, now_rfc3339
from engine.containers.service import ContainerService
from engine.containers.store import ContainerStore
from engine.containers.streams import OutputBroadcaster
from engine.events import EventBus
from runtime.bundle import Bundle
from runtime.fake import FakeContext, FakeRuntime
from runtime.types import IOSpec

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"nobody:x:65534:65534:nobody:/home:/bin/false\n"
    b"bob:x:1000:1000::/home/bob:/bin/sh\n"
)
GROUP = b"root:x:0:\nnogroup:x:65534:\nbob:x:1000:\nstaff:x:50:bob\n"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


# --- fake programs ---------------------------------------------------------------------------------


async def _big(ctx: FakeContext) -> int:
    """Writes int(argv[1]) bytes in 64 KiB chunks."""
    left = int(ctx.args[1])
    while left:
        n = min(left, 65536)
        await ctx.write(b"x" * n)
        left -= n
    return 0


async def _size(ctx: FakeContext) -> int:
    """Waits for a terminal size (or `sleep` seconds), then prints it as "h w"."""
    for _ in range(200):
        if ctx.terminal_size is not None and ctx.terminal_size.height != 1:
            break
        await asyncio.sleep(0.01)
    size = ctx.terminal_size
    await ctx.write(f"{size.height} {size.width}\n".encode() if size else b"none\n")
    return 0


async def _env(ctx: FakeContext) -> int:
    await ctx.write(("\n".join(ctx.env) + "\n").encode())
    return 0


PROGRAMS = {"big": _big, "size": _size, "env": _env}


# --- harness -----------------------------------------------------------------------------------------


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.runtime = FakeRuntime(PROGRAMS)
        self.bus = EventBus()
        self.containers = ContainerService(
            store=ContainerStore(tmp / "containers"),
            images=cast(Any, None),
            layers=cast(Any, None),
            runtime=self.runtime,
            events=self.bus,
            exec_root=tmp / "exec",
        )
        self.execs = ExecService(self.containers, self.bus)
        self.specs: dict[str, tuple[dict[str, Any], IOSpec]] = {}

    async def container(self, name: str = "c", config: dict[str, Any] | None = None) -> Container:
        """A running container as ContainerService leaves it: record, bundle, task, LiveContainer."""
        cid = ids.new_id()
        cfg = {"Image": "busybox", "Hostname": cid[:12], "Env": ["FOO=bar"], "Labels": {"l": "v"}}
        cfg.update(config or {})
        c = Container(
            id=cid,
            name="/" + name,
            created=now_rfc3339(),
            image_id="sha256:" + "0" * 64,
            path="sleep",
            args=["1000"],
            config=cfg,
            host_config={"GroupAdd": ["staff"]},
        )
        self.containers.store.reserve(c)
        spec = {
            "ociVersion": "1.0.2",
            "hostname": cid[:12],
            "root": {"path": "rootfs"},
            "process": {
                "args": ["sleep", "1000"],
                "env": ["PATH=/usr/bin:/bin", "FOO=bar"],
                "cwd": "/",
                "user": {"uid": 0, "gid": 0},
                "capabilities": {
                    "bounding": ["CAP_CHOWN"],
                    "effective": ["CAP_CHOWN"],
                    "permitted": ["CAP_CHOWN"],
                },
                "noNewPrivileges": True,
            },
        }
        bundle = Bundle.create(self.containers.bundles, cid, spec)
        (bundle.rootfs / "etc").mkdir()
        (bundle.rootfs / "etc" / "passwd").write_bytes(PASSWD)
        (bundle.rootfs / "etc" / "group").write_bytes(GROUP)
        task = await self.runtime.create(cid, bundle.path, IOSpec())
        await task.start()
        c.state.set_running(task.pid)
        self.containers.live[cid] = LiveContainer(
            task=task, output=OutputBroadcaster(), logger=None, pumps=[]
        )
        original = task.exec

        async def capture(exec_id: str, process_spec: dict[str, Any], io: IOSpec) -> Any:
            self.specs[exec_id] = (process_spec, io)
            return await original(exec_id, process_spec, io)

        task.exec = capture  # type: ignore[method-assign]
        return c

    async def stop(self, c: Container) -> None:
        task = self.runtime.tasks[c.id]
        await task.kill(9)
        c.state.set_stopped(137)
        self.containers.live.pop(c.id, None)

    def actions(self) -> list[tuple[str, dict[str, str]]]:
        return [(e.action, dict(e.attributes)) for e in self.bus._ring]

    async def create(self, c: Container, cmd: list[str], **body: Any) -> ExecRecord:
        return await self.execs.create(c.id, {"Cmd": cmd, "AttachStdout": True, "AttachStderr": True, **body})

    async def session(self, record: ExecRecord, **kw: Any) -> ExecSession:
        session = await self.execs.start(record.id, detach=False, **kw)
        assert session is not None
        return session


class Collector:
    """The output side of a hijacked connection; optionally slow."""

    def __init__(self, delay: float = 0.0, on_write: Callable[[], None] | None = None) -> None:
        self.chunks: list[tuple[str, bytes]] = []
        self.delay = delay
        self.on_write = on_write

    async def __call__(self, stream: str, data: bytes) -> None:
        if self.on_write is not None:
            self.on_write()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.chunks.append((stream, data))

    def joined(self, stream: str = "stdout") -> bytes:
        return b"".join(d for s, d in self.chunks if s == stream)


class Stdin:
    """The read side of a hijacked connection: the given chunks, then EOF (or hold open)."""

    def __init__(self, chunks: list[bytes], hold: bool = False) -> None:
        self._chunks = list(chunks)
        self._hold = hold

    async def read(self, n: int) -> bytes:
        await asyncio.sleep(0)
        if self._chunks:
            return self._chunks.pop(0)
        if self._hold:
            await asyncio.Event().wait()
        return b""


def scenario(tmp_path: Path, body: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        try:
            await body(h)
        finally:
            # Kills every fake process (execs included), so the exec monitors finish.
            await h.runtime.close()
            await asyncio.gather(*h.containers._background, return_exceptions=True)

    run(main())


# --- create ------------------------------------------------------------------------------------------


def test_create_record_inspect_fields_and_event(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container(config={"User": "bob", "WorkingDir": "/srv"})
        rec = await h.execs.create(c.id[:12], {"Cmd": ["echo", "hi"], "AttachStdout": True, "Tty": True})
        assert len(rec.id) == 64 and int(rec.id, 16) >= 0
        assert rec.container_id == c.id
        assert (rec.entrypoint, rec.arguments, rec.tty, rec.privileged) == ("echo", ["hi"], True, False)
        assert (rec.open_stdin, rec.open_stdout, rec.open_stderr) == (False, True, False)
        assert rec.running is False and rec.exit_code is None and rec.pid == 0 and rec.can_remove is False
        # dockerd fills in the container's user and working directory.
        assert (rec.user, rec.working_dir, rec.detach_keys) == ("bob", "/srv", b"")
        assert h.execs.inspect(rec.id) is rec
        assert h.execs.exec_ids(c.id) == [rec.id]
        action, attrs = h.actions()[-1]
        assert action == "exec_create: echo hi"
        assert attrs == {"l": "v", "image": "busybox", "name": "c", "execID": rec.id}

    scenario(tmp_path, body)


def test_create_event_keeps_dockerds_trailing_space(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        await h.create(c, ["true"])
        assert h.actions()[-1][0] == "exec_create: true "

    scenario(tmp_path, body)


def test_create_errors_have_dockerd_texts(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container(name="web")
        empties: list[dict[str, Any]] = [{}, {"Cmd": []}, {"Cmd": None}]
        for empty in empties:
            with pytest.raises(errdefs.InvalidParameter, match=r"^No exec command specified$"):
                await h.execs.create("nonexistent", empty)  # checked before the container
        with pytest.raises(errdefs.NotFound, match=r"^No such container: nope$"):
            await h.execs.create("nope", {"Cmd": ["true"]})
        with pytest.raises(errdefs.Internal, match=r"^Invalid escape keys \(ctrl-x,zz\) provided$"):
            await h.execs.create("web", {"Cmd": ["true"], "DetachKeys": "ctrl-x,zz"})
        with pytest.raises(
            errdefs.InvalidParameter, match=r"^unable to find user nope: no matching entries in passwd file$"
        ):
            await h.execs.create("web", {"Cmd": ["true"], "User": "nope"})
        with pytest.raises(errdefs.InvalidParameter):
            await h.execs.create("web", {"Cmd": "true"})
        with pytest.raises(errdefs.InvalidParameter):
            await h.execs.create("web", {"Cmd": ["true"], "ConsoleSize": [1, 2, 3]})
        c.state.paused = True
        with pytest.raises(
            errdefs.Conflict, match=r"^Container web is paused, unpause the container before exec$"
        ):
            await h.execs.create("web", {"Cmd": ["true"]})
        c.state.paused = False
        await h.stop(c)
        with pytest.raises(errdefs.Conflict, match=rf"^container {c.id} is not running$"):
            await h.execs.create("web", {"Cmd": ["true"]})
        assert not [a for a, _ in h.actions() if a.startswith("exec_create")]

    scenario(tmp_path, body)


def test_detach_keys_are_stored_as_bytes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["true"], DetachKeys="ctrl-x,y")
        assert rec.detach_keys == b"\x18y"

    scenario(tmp_path, body)


# --- start: attached ---------------------------------------------------------------------------------


def test_session_streams_output_and_records_exit_before_returning(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["sh", "-c", "echo out; echo err >&2; exit 5"])
        session = await h.session(rec)
        assert rec.running is False  # claimed only once the hijacked session runs
        out = Collector()
        await session.run(None, out)
        assert out.joined("stdout") == b"out\n" and out.joined("stderr") == b"err\n"
        # What the CLI reads right after EOF (hijack.md pitfall 5).
        assert (rec.running, rec.exit_code) == (False, 5)
        assert rec.pid > 0
        actions = [a for a, _ in h.actions()]
        assert actions[-2:] == ["exec_start: sh -c echo out; echo err >&2; exit 5", "exec_die"]
        assert h.actions()[-1][1]["exitCode"] == "5" and h.actions()[-1][1]["execID"] == rec.id
        assert h.execs.exec_ids(c.id) == []  # finished execs leave the container's list
        assert h.execs.inspect(rec.id).exit_code == 5  # but stay inspectable

    scenario(tmp_path, body)


def test_exit_code_is_recorded_while_output_is_still_being_delivered(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["big", str(300_000)])
        seen: list[int | None] = []
        out = Collector(delay=0.01, on_write=lambda: seen.append(rec.exit_code))
        await (await h.session(rec)).run(None, out)
        assert len(out.joined()) == 300_000
        assert seen[0] is None and seen[-1] == 0  # dockerd's order: exit recorded, then drained

    scenario(tmp_path, body)


def test_closed_streams_are_not_delivered(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.execs.create(
            c.id, {"Cmd": ["sh", "-c", "echo out; echo err >&2"], "AttachStderr": True}
        )
        out = Collector()
        await (await h.session(rec)).run(None, out)
        assert out.chunks == [("stderr", b"err\n")]

    scenario(tmp_path, body)


def test_stdin_reaches_the_process_and_eof_closes_it(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["cat"], AttachStdin=True)
        out = Collector()
        await (await h.session(rec)).run(Stdin([b"abc\n", b"def\n"]), out)
        assert out.joined() == b"abc\ndef\n"
        assert rec.exit_code == 0
        assert h.specs[rec.id][1].stdin is True

    scenario(tmp_path, body)


def test_without_attach_stdin_the_process_gets_no_stdin(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["cat"])
        out = Collector()
        await (await h.session(rec)).run(Stdin([b"ignored"], hold=True), out)
        assert out.chunks == [] and rec.exit_code == 0
        assert h.specs[rec.id][1].stdin is False

    scenario(tmp_path, body)


def test_tty_detach_keys_end_the_session_and_the_process_keeps_running(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["cat"], AttachStdin=True, Tty=True, DetachKeys="ctrl-a,d")
        out = Collector()
        await (await h.session(rec)).run(Stdin([b"hi\n", b"\x01d"], hold=True), out)
        assert rec.running is True and rec.exit_code is None
        assert ("exec_detach", rec.id) in [(a, attrs.get("execID")) for a, attrs in h.actions()]
        assert h.execs.exec_ids(c.id) == [rec.id]

    scenario(tmp_path, body)


def test_second_start_fails_with_dockerd_texts(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["sleep", "0.3"])
        first = asyncio.ensure_future((await h.session(rec)).run(None, Collector()))
        await asyncio.sleep(0.05)
        with pytest.raises(errdefs.Conflict, match=rf"^Error: Exec command {rec.id} is already running$"):
            await (await h.session(rec)).run(None, Collector())
        with pytest.raises(errdefs.Conflict, match=rf"^Error: Exec command {rec.id} is already running$"):
            await h.execs.start(rec.id, detach=True)
        await first
        with pytest.raises(errdefs.Conflict, match=rf"^Error: Exec command {rec.id} has already run$"):
            await h.execs.start(rec.id, detach=True)
        assert rec.exit_code == 0

    scenario(tmp_path, body)


def test_start_failure_records_dockerd_exit_code(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["nope"])
        with pytest.raises(errdefs.InvalidParameter, match="executable file not found") as exc:
            await (await h.session(rec)).run(None, Collector())
        assert "exec failed" in exc.value.message
        assert (rec.running, rec.exit_code) == (False, 127)
        other = await h.create(c, ["nope"])
        h.runtime.fail_next("exec", errdefs.Internal("boom"))
        with pytest.raises(errdefs.Internal):
            await h.execs.start(other.id, detach=True)
        assert other.exit_code == 126

    scenario(tmp_path, body)


def test_start_errors_before_the_hijack(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["true"])
        with pytest.raises(errdefs.NotFound, match=r"^No such exec instance: nope$"):
            await h.execs.start("nope", detach=False)
        c.state.paused = True
        with pytest.raises(
            errdefs.Conflict, match=rf"^Container {c.id} is paused, unpause the container before exec$"
        ):
            await h.execs.start(rec.id, detach=False)
        c.state.paused = False
        running = await h.create(c, ["sleep", "10"])
        await h.execs.start(running.id, detach=True)
        await h.stop(c)
        with pytest.raises(errdefs.Conflict, match=rf"^container {c.id} is not running$"):
            await h.execs.start(running.id, detach=False)

    scenario(tmp_path, body)


def test_client_gone_does_not_stop_the_process(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["big", str(2_000_000)])

        async def gone(stream: str, data: bytes) -> None:
            raise ConnectionResetError("client went away")

        await (await h.session(rec)).run(None, gone)  # output is consumed anyway
        assert rec.exit_code == 0

    scenario(tmp_path, body)


def test_cancelled_session_leaves_the_process_running_to_its_exit(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["sh", "-c", "sleep 0.2; echo late; exit 3"])
        task = asyncio.ensure_future((await h.session(rec)).run(None, Collector()))
        await asyncio.sleep(0.05)
        task.cancel()  # the hijacked connection went away
        await asyncio.gather(task, return_exceptions=True)
        assert rec.running is True
        for _ in range(100):
            if rec.exit_code is not None:
                break
            await asyncio.sleep(0.01)
        assert (rec.running, rec.exit_code) == (False, 3)

    scenario(tmp_path, body)


# --- start: detached ---------------------------------------------------------------------------------


def test_detached_start_runs_and_consumes_output(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["big", str(3 << 20)], AttachStdin=True)
        assert await h.execs.start(rec.id, detach=True) is None
        assert rec.running is True and rec.pid > 0
        assert h.specs[rec.id][1].stdin is False  # dockerd: no stdin without a client
        for _ in range(500):
            if rec.exit_code is not None:
                break
            await asyncio.sleep(0.01)
        assert rec.exit_code == 0  # 3 MB with nobody reading did not block it

    scenario(tmp_path, body)


# --- process spec ------------------------------------------------------------------------------------


def test_process_spec_env_user_workdir_privileged(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container(config={"Env": ["FOO=bar", "KEEP=1"], "WorkingDir": "/srv"})
        rec = await h.create(
            c, ["env"], Env=["FOO=baz", "NEW=1"], User="bob", WorkingDir="/tmp", Privileged=True, Tty=True
        )
        out = Collector()
        await (await h.session(rec, console_size=(30, 100))).run(None, out)
        spec, io = h.specs[rec.id]
        assert spec["args"] == ["env"]
        assert "FOO=baz" in spec["env"] and "NEW=1" in spec["env"] and "KEEP=1" in spec["env"]
        assert "TERM=xterm" in spec["env"] and f"HOSTNAME={c.id[:12]}" in spec["env"]
        assert spec["cwd"] == "/tmp"
        assert (spec["user"]["uid"], spec["user"]["gid"]) == (1000, 1000)
        assert spec["user"]["additionalGids"][0] == 1000 and 50 in spec["user"]["additionalGids"]
        assert len(spec["capabilities"]["bounding"]) > 1
        assert spec["noNewPrivileges"] is True  # inherited from the container's process
        assert spec["terminal"] is True and spec["consoleSize"] == {"height": 30, "width": 100}
        assert io.tty is True and io.console_size is not None and io.console_size.width == 100
        assert b"FOO=baz" in out.joined()

    scenario(tmp_path, body)


def test_process_spec_defaults_keep_the_containers_user(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container(config={"WorkingDir": "/srv"})
        rec = await h.create(c, ["true"])
        await (await h.session(rec)).run(None, Collector())
        spec, io = h.specs[rec.id]
        assert spec["user"] == {"uid": 0, "gid": 0} and spec["cwd"] == "/srv"
        assert spec["capabilities"]["bounding"] == ["CAP_CHOWN"]
        assert "terminal" not in spec and io.tty is False and io.console_size is None

    scenario(tmp_path, body)


# --- resize ------------------------------------------------------------------------------------------


def test_resize_before_start_is_applied_when_the_process_exists(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["size"], Tty=True)
        await h.execs.resize(rec.id, 1, 1)
        await h.execs.resize(rec.id, 33, 120)  # the last one wins
        assert rec.pending_size == (33, 120)
        out = Collector()
        await (await h.session(rec)).run(None, out)
        assert out.joined() == b"33 120\n"
        await h.execs.resize(rec.id, 10, 10)  # after the exit: accepted, nothing to do

    scenario(tmp_path, body)


def test_resize_while_running_and_initial_console_size(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["size"], Tty=True, ConsoleSize=[1, 80])
        out = Collector()
        task = asyncio.ensure_future((await h.session(rec)).run(None, out))
        for _ in range(100):
            if rec.process is not None:
                break
            await asyncio.sleep(0.005)
        assert h.specs[rec.id][1].console_size is not None
        await h.execs.resize(rec.id, 40, 132)
        await task
        assert out.joined() == b"40 132\n"

    scenario(tmp_path, body)


def test_resize_unknown_exec_is_404(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(errdefs.NotFound, match=r"^No such exec instance: nope$"):
            await h.execs.resize("nope", 10, 10)

    scenario(tmp_path, body)


# --- record lifetime ---------------------------------------------------------------------------------


def test_container_stop_drops_unstarted_execs_and_keeps_finished_ones(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        done = await h.create(c, ["true"])
        await (await h.session(done)).run(None, Collector())
        pending = await h.create(c, ["true"])
        await h.stop(c)
        with pytest.raises(errdefs.NotFound, match=rf"^No such exec instance: {pending.id}$"):
            h.execs.inspect(pending.id)
        assert h.execs.inspect(done.id).exit_code == 0
        assert h.execs.exec_ids(c.id) == []
        h.containers.store.delete(c)
        with pytest.raises(errdefs.NotFound, match=rf"^No such exec instance: {done.id}$"):
            h.execs.inspect(done.id)

    scenario(tmp_path, body)


def test_restart_drops_unstarted_execs(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        rec = await h.create(c, ["true"])
        c.state.started_at = "2099-01-01T00:00:00Z"  # a new run of the same container
        assert h.execs.exec_ids(c.id) == []
        with pytest.raises(errdefs.NotFound):
            await h.execs.start(rec.id, detach=True)

    scenario(tmp_path, body)


def test_garbage_collection_marks_then_removes_finished_execs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(h: Harness) -> None:
        c = await h.container()
        done = await h.create(c, ["true"])
        await (await h.session(done)).run(None, Collector())
        idle = await h.create(c, ["true"])
        clock = [time.monotonic()]
        # Only the exec module's clock: the event loop keeps the real one.
        monkeypatch.setattr("engine.containers.exec.time", SimpleNamespace(monotonic=lambda: clock[0]))
        clock[0] += exec_module.GC_INTERVAL + 1
        assert h.execs.inspect(done.id).can_remove is True  # first pass: unused
        assert h.execs.inspect(idle.id).can_remove is False  # still in the container's list
        clock[0] += exec_module.GC_INTERVAL + 1
        with pytest.raises(errdefs.NotFound):
            h.execs.inspect(done.id)
        assert h.execs.inspect(idle.id).id == idle.id

    scenario(tmp_path, body)
