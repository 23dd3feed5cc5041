"""docker-py's high-level client end to end: containers, images, networks (stopped containers),
volumes, exec, events, a stats smoke call, and the exceptions docker-py raises.

Scenarios written for skiff with docker-py's own expectations (return shapes, exception classes,
status codes), checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). Where
dockerd 20.10 answers differently from dockerd 28 (which skiff follows), a test branches on
``daemon.is_docker``. Everything a test makes is removed, also when it fails. Networking of
running containers is in test_highlevel_network.py.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from conftest import ContainerNames, Daemon
from docker.models.containers import Container

_counter = itertools.count()
# cgroup v1 (memory controller mounted for the container) or v2.
READ_MEMORY_LIMIT = (
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
)
TICKER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done"]


@pytest.fixture(scope="module", autouse=True)
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> None:
    dockerpy.images.load(busybox_tar.read_bytes())


class Made:
    """Networks and volumes a test made (containers go through the ``names`` fixture)."""

    def __init__(self, token: str, client: docker.DockerClient) -> None:
        self.prefix = f"skpyhl-{token}-{next(_counter)}"
        self.label = {"org.skiff.test.highlevel": self.prefix}
        self.label_filter = f"org.skiff.test.highlevel={self.prefix}"
        self.client = client
        self.networks: list[str] = []
        self.volumes: list[str] = []

    def network(self, suffix: str = "n") -> str:
        self.networks.append(f"{self.prefix}-{suffix}")
        return self.networks[-1]

    def volume(self, suffix: str = "v") -> str:
        self.volumes.append(f"{self.prefix}-{suffix}")
        return self.volumes[-1]

    def cleanup(self) -> None:
        for name in self.networks:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_network(name)
        for name in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_volume(name, force=True)


@pytest.fixture
def made(session_token: str, dockerpy: docker.DockerClient, names: ContainerNames) -> Iterator[Made]:
    m = Made(session_token, dockerpy)
    yield m
    names.cleanup()  # containers first: they hold the networks and volumes
    m.cleanup()


def wait_gone(client: docker.DockerClient, name: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.containers.get(name)
        except docker.errors.NotFound:
            return
        time.sleep(0.1)
    pytest.fail(f"container {name} still exists after {timeout}s")


# --- containers ------------------------------------------------------------------------------------


def test_run_detached_wait_logs_and_remove(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    name = names()
    c = dockerpy.containers.run(
        "busybox", ["sh", "-c", "echo out; echo err >&2; exit 4"], name=name, detach=True
    )
    assert isinstance(c, Container) and c.name == name and re.fullmatch(r"[0-9a-f]{64}", c.id)
    assert c.wait(timeout=30) == {"StatusCode": 4, "Error": None}
    assert c.logs(stdout=True, stderr=False) == b"out\n"
    assert c.logs(stdout=False, stderr=True) == b"err\n"
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 4
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        dockerpy.containers.get(name)


def test_run_detached_with_remove_goes_away(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    name = names()
    c = dockerpy.containers.run("busybox", "true", name=name, detach=True, remove=True)
    with contextlib.suppress(docker.errors.NotFound):  # it may already be gone
        assert c.wait(timeout=30)["StatusCode"] == 0
    wait_gone(dockerpy, name)


def test_logs_stream_cancelled_by_closing_the_generator(
    dockerpy: docker.DockerClient, names: ContainerNames
) -> None:
    c = dockerpy.containers.run("busybox", TICKER, name=names(), detach=True)
    stream = c.logs(stream=True, follow=True)
    seen = b""
    for chunk in stream:
        seen += chunk
        if seen.count(b"\n") >= 3:
            break
    assert seen.startswith(b"line 1\nline 2\nline 3\n")
    stream.close()
    # Reading on after close ends promptly instead of hanging on the follow stream.
    done = threading.Event()

    def drain() -> None:
        with contextlib.suppress(Exception):
            for _ in stream:
                pass
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    assert done.wait(10)
    c.reload()
    assert c.status == "running"  # only the log stream ended
    assert c.logs(tail=1).startswith(b"line ")  # the daemon still serves this container
    c.kill()
    assert c.wait(timeout=30)["StatusCode"] == 137


def test_attach_stream_from_before_start(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    c = dockerpy.containers.create(
        "busybox", ["sh", "-c", "sleep 0.5; echo a; echo b >&2; echo c"], name=names()
    )
    stream = c.attach(stream=True, logs=True, stdout=True, stderr=True)
    c.start()
    out = b"".join(stream)
    assert sorted(out.splitlines()) == [b"a", b"b", b"c"]
    assert c.wait(timeout=30)["StatusCode"] == 0


def test_reload_rename_pause_top_diff_export_update_kill(
    dockerpy: docker.DockerClient, names: ContainerNames
) -> None:
    c = dockerpy.containers.run("busybox", "sleep 600", name=names("a"), detach=True)
    new = names("b")
    c.rename(new)
    c.reload()
    assert c.name == new and dockerpy.containers.get(new).id == c.id
    with pytest.raises(docker.errors.NotFound):
        dockerpy.containers.get(names.made[0])

    c.pause()
    c.reload()
    assert c.status == "paused" and c.attrs["State"]["Paused"] is True
    c.unpause()
    c.reload()
    assert c.status == "running"

    top = c.top()
    assert top["Titles"][:2] == ["UID", "PID"] and top["Titles"][-1] == "CMD"
    assert [p[-1] for p in top["Processes"]] == ["sleep 600"]
    assert c.top(ps_args="-o pid,comm")["Titles"] == ["PID", "COMMAND"]

    assert c.exec_run("sh -c 'echo x > /tmp/x; rm /bin/ls'").exit_code == 0
    assert sorted(c.diff(), key=lambda d: d["Path"]) == [
        {"Path": "/bin", "Kind": 0},
        {"Path": "/bin/ls", "Kind": 2},
        {"Path": "/tmp", "Kind": 0},
        {"Path": "/tmp/x", "Kind": 1},
    ]

    with tarfile.open(fileobj=io.BytesIO(b"".join(c.export()))) as tar:
        members = set(tar.getnames())
    assert {"bin/busybox", "tmp/x", "etc/passwd"} <= members and "bin/ls" not in members

    assert c.update(cpu_shares=512, mem_limit="64m", memswap_limit="128m") == {"Warnings": None}
    c.reload()
    assert (c.attrs["HostConfig"]["CpuShares"], c.attrs["HostConfig"]["Memory"]) == (512, 64 * 2**20)
    assert c.exec_run(["sh", "-c", READ_MEMORY_LIMIT]).output == b"67108864\n"

    c.kill(signal="SIGTERM")  # sleep as PID 1 has no handler: ignored
    time.sleep(0.3)
    c.reload()
    assert c.status == "running"
    c.kill()
    assert c.wait(timeout=30) == {"StatusCode": 137, "Error": None}
    c.reload()
    assert c.status == "exited"


def test_commit_then_run_the_new_image(
    dockerpy: docker.DockerClient, names: ContainerNames, images: Any
) -> None:
    c = dockerpy.containers.run("busybox", ["sh", "-c", "echo made > /made"], name=names("src"), detach=True)
    assert c.wait(timeout=30)["StatusCode"] == 0
    repo = images.repo("commit")
    image = c.commit(repository=repo, tag="v1", message="msg", changes=["ENV HL=1"])
    images.track(image.id)
    assert image.tags == [f"{repo}:v1"]
    out = dockerpy.containers.run(
        f"{repo}:v1", ["sh", "-c", "cat /made; echo $HL"], name=names("run"), remove=True
    )
    assert out == b"made\n1\n"


def test_list_get_and_prune_by_label(
    dockerpy: docker.DockerClient, names: ContainerNames, made: Made
) -> None:
    done = dockerpy.containers.run("busybox", "true", name=names("done"), labels=made.label, detach=True)
    done.wait(timeout=30)
    live = dockerpy.containers.run("busybox", "sleep 600", name=names("live"), labels=made.label, detach=True)
    by_label = {"label": made.label_filter}
    assert [c.id for c in dockerpy.containers.list(filters=by_label)] == [live.id]
    assert {c.id for c in dockerpy.containers.list(all=True, filters=by_label)} == {live.id, done.id}
    assert dockerpy.containers.get(live.id[:12]).id == live.id
    assert dockerpy.containers.list(all=True, filters={**by_label, "status": "exited"})[0].id == done.id
    pruned = dockerpy.containers.prune(filters=by_label)
    assert pruned["ContainersDeleted"] == [done.id] and isinstance(pruned["SpaceReclaimed"], int)
    assert [c.id for c in dockerpy.containers.list(all=True, filters=by_label)] == [live.id]


# --- images ----------------------------------------------------------------------------------------


def test_images_get_list_tag_history_save_load_remove(dockerpy: docker.DockerClient, images: Any) -> None:
    built = images.load(labels={"hl": "1"})
    image = dockerpy.images.get(built.tags[0])
    assert image.id == built.id and image.tags == list(built.tags) and image.labels["hl"] == "1"
    assert image.short_id == built.id[:19]
    assert [i.id for i in dockerpy.images.list(name=images.repo())] == [built.id]
    assert [i.id for i in dockerpy.images.list(filters={"label": "hl=1", "reference": images.repo()})] == [
        built.id
    ]

    assert image.tag(images.repo(), "second") is True
    image.reload()
    assert sorted(image.tags) == sorted([built.tags[0], f"{images.repo()}:second"])

    history = image.history()
    assert history and history[0]["Id"] == built.id
    assert {"Created", "CreatedBy", "Size", "Tags", "Comment"} <= set(history[0])

    data = b"".join(image.save(named=built.tags[0]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "manifest.json" in tar.getnames()

    dockerpy.images.remove(f"{images.repo()}:second")
    dockerpy.images.remove(built.tags[0])
    with pytest.raises(docker.errors.ImageNotFound):
        dockerpy.images.get(built.id)
    loaded = dockerpy.images.load(data)
    assert [i.id for i in loaded] == [built.id]
    assert dockerpy.images.get(built.id).tags == [built.tags[0]]  # the one tag saved


# --- networks (stopped containers) -----------------------------------------------------------------


def test_network_create_get_list_connect_disconnect_remove(
    dockerpy: docker.DockerClient, names: ContainerNames, made: Made
) -> None:
    name = made.network()
    net = dockerpy.networks.create(name, driver="bridge", labels=made.label)
    assert net.name == name and re.fullmatch(r"[0-9a-f]{64}", net.id)
    assert dockerpy.networks.get(name).id == net.id and dockerpy.networks.get(net.id[:12]).id == net.id
    assert [n.id for n in dockerpy.networks.list(names=[name])] == [net.id]
    assert [n.id for n in dockerpy.networks.list(filters={"label": made.label_filter})] == [net.id]
    assert net.attrs["Driver"] == "bridge" and net.attrs["Labels"] == made.label

    c = dockerpy.containers.create("busybox", "true", name=names())
    net.connect(c, aliases=["svc"])
    c.reload()
    endpoint = c.attrs["NetworkSettings"]["Networks"][name]
    assert "svc" in endpoint["Aliases"]
    net.reload()
    assert net.containers == []  # only running containers have endpoints
    net.disconnect(c)
    c.reload()
    assert name not in c.attrs["NetworkSettings"]["Networks"]
    c.remove()
    net.remove()
    with pytest.raises(docker.errors.NotFound):
        dockerpy.networks.get(name)


def test_network_prune_by_label(dockerpy: docker.DockerClient, made: Made) -> None:
    a = dockerpy.networks.create(made.network("a"), labels=made.label)
    dockerpy.networks.create(made.network("b"))
    assert dockerpy.networks.prune(filters={"label": made.label_filter}) == {"NetworksDeleted": [a.name]}
    assert [n.name for n in dockerpy.networks.list(names=made.networks)] == [made.networks[1]]


# --- volumes ---------------------------------------------------------------------------------------


def test_volumes_create_get_list_remove_prune(
    dockerpy: docker.DockerClient, names: ContainerNames, made: Made, daemon: Daemon
) -> None:
    keep, drop = made.volume("keep"), made.volume("drop")
    v = dockerpy.volumes.create(keep, labels=made.label)
    assert v.name == keep and v.attrs["Driver"] == "local" and v.attrs["Labels"] == made.label
    dockerpy.volumes.create(drop, labels=made.label)
    assert dockerpy.volumes.get(keep).id == keep
    listed = dockerpy.volumes.list(filters={"label": made.label_filter})
    assert sorted(v.name for v in listed) == sorted([keep, drop])
    dockerpy.containers.create(
        "busybox", "true", name=names(), volumes={keep: {"bind": "/data", "mode": "rw"}}
    )
    # API >= 1.42 prunes only anonymous volumes unless all=true.
    prune_filter: dict[str, Any] = {"label": made.label_filter}
    if not (daemon.is_docker and daemon.api_version < "1.42"):
        assert dockerpy.volumes.prune(filters=prune_filter)["VolumesDeleted"] in ([], None)
        prune_filter["all"] = "true"
    pruned = dockerpy.volumes.prune(filters=prune_filter)
    assert pruned["VolumesDeleted"] == [drop] and isinstance(pruned["SpaceReclaimed"], int)
    with pytest.raises(docker.errors.APIError) as err:
        dockerpy.volumes.get(keep).remove()
    assert err.value.status_code == 409
    names.cleanup()
    dockerpy.volumes.get(keep).remove()
    with pytest.raises(docker.errors.NotFound):
        dockerpy.volumes.get(keep)


# --- exec ------------------------------------------------------------------------------------------


def test_exec_run_shapes(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    c = dockerpy.containers.run("busybox", "sleep 600", name=names(), detach=True)
    result = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, sorted(result.output.splitlines())) == (3, [b"err", b"out"])
    assert c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True) == (0, (b"out\n", b"err\n"))
    assert c.exec_run(["sh", "-c", "echo out"], demux=True, stderr=False).output == (b"out\n", None)
    streamed = c.exec_run(["sh", "-c", "echo 1; sleep 0.3; echo 2"], stream=True)
    assert streamed.exit_code is None  # docker-py cannot know it while streaming
    assert b"".join(streamed.output) == b"1\n2\n"
    env = c.exec_run(["sh", "-c", "echo $A:$B; pwd"], environment={"A": "x", "B": "y"}, workdir="/tmp")
    assert env == (0, b"x:y\n/tmp\n")
    assert c.exec_run("id -u", user="65534").output == b"65534\n"
    demuxed_stream = c.exec_run(["sh", "-c", "echo o; sleep 0.2; echo e >&2"], stream=True, demux=True)
    assert list(demuxed_stream.output) == [(b"o\n", None), (None, b"e\n")]


# --- events ----------------------------------------------------------------------------------------


def test_events_decode_filters_and_close(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    name = names()
    events = dockerpy.events(decode=True, filters={"container": name, "event": ["create", "start", "die"]})
    try:
        c = dockerpy.containers.run("busybox", ["sh", "-c", "exit 5"], name=name, detach=True)
        got = [next(events) for _ in range(3)]
    finally:
        events.close()
    assert [e["Action"] for e in got] == ["create", "start", "die"]
    assert all(e["Type"] == "container" and e["Actor"]["ID"] == c.id and e["id"] == c.id for e in got)
    assert got[2]["Actor"]["Attributes"]["exitCode"] == "5"
    assert got[0]["Actor"]["Attributes"]["name"] == name and got[0]["from"] == "busybox"
    assert all(isinstance(e["time"], int) and isinstance(e["timeNano"], int) for e in got)
    with pytest.raises(StopIteration):  # closed: the generator is over, not blocked
        next(events)


def test_events_since_until_replay_ends(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    name = names()
    since = time.time()
    c = dockerpy.containers.create("busybox", "true", name=name)
    c.rename(names("renamed"))
    c.remove()
    until = time.time()
    replay = list(dockerpy.events(since=since, until=until, decode=True, filters={"container": c.id}))
    assert [e["Action"] for e in replay] == ["create", "rename", "destroy"]
    assert replay[1]["Actor"]["Attributes"]["oldName"] == "/" + name
    # Raw (not decoded): one JSON document per chunk, as bytes.
    raw = list(dockerpy.events(since=since, until=until, filters={"container": c.id, "event": "destroy"}))
    assert len(raw) == 1 and raw[0].startswith(b"{") and b'"destroy"' in raw[0]


def test_events_until_in_the_future_ends_by_itself(dockerpy: docker.DockerClient) -> None:
    start = time.monotonic()
    got = list(dockerpy.events(until=time.time() + 1.5, decode=True, filters={"type": "plugin"}))
    elapsed = time.monotonic() - start
    assert got == [] and 1.2 < elapsed < 10


# --- stats (smoke) ---------------------------------------------------------------------------------


def test_stats_one_shot_smoke(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    c = dockerpy.containers.run("busybox", "sleep 600", name=names(), detach=True)
    stats = c.stats(stream=False)
    assert stats["id"] == c.id and stats["name"] == "/" + c.name
    assert {"read", "cpu_stats", "precpu_stats", "memory_stats", "pids_stats", "blkio_stats"} <= set(stats)


# --- exceptions ------------------------------------------------------------------------------------


def test_not_found_errors(dockerpy: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.NotFound) as err:
        dockerpy.containers.get("skiff-no-such-container")
    assert (
        err.value.status_code == 404 and err.value.explanation == "No such container: skiff-no-such-container"
    )
    assert err.value.is_client_error() and not err.value.is_server_error()
    with pytest.raises(docker.errors.ImageNotFound) as image_err:
        dockerpy.images.get("skiff-no-such-image:none")
    assert image_err.value.status_code == 404
    with pytest.raises(docker.errors.ImageNotFound):
        dockerpy.images.remove("skiff-no-such-image:none")
    with pytest.raises(docker.errors.ImageNotFound):  # create does not pull
        dockerpy.containers.create("skiff-no-such-image:none", "true")
    with pytest.raises(docker.errors.NotFound) as net_err:
        dockerpy.networks.get("skiff-no-such-network")
    assert net_err.value.explanation == "network skiff-no-such-network not found"
    with pytest.raises(docker.errors.NotFound) as vol_err:
        dockerpy.volumes.get("skiff-no-such-volume")
    assert vol_err.value.explanation == "get skiff-no-such-volume: no such volume"


def test_api_errors_and_status_codes(
    dockerpy: docker.DockerClient, names: ContainerNames, daemon: Daemon
) -> None:
    name = names()
    c = dockerpy.containers.create("busybox", "sleep 600", name=name)
    with pytest.raises(docker.errors.APIError) as err:
        dockerpy.containers.create("busybox", "true", name=name)
    assert err.value.status_code == 409
    assert err.value.explanation == (
        f'Conflict. The container name "/{name}" is already in use by container "{c.id}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
    with pytest.raises(docker.errors.APIError) as err:
        c.exec_run("true")
    # dockerd 20.10 capitalises it.
    assert (
        err.value.status_code == 409 and err.value.explanation.lower() == f"container {c.id} is not running"
    )
    with pytest.raises(docker.errors.APIError) as err:
        dockerpy.containers.list(filters={"bogus": "1"})
    assert err.value.status_code == 400 and err.value.explanation.lower() == "invalid filter 'bogus'"
    c.start()
    with pytest.raises(docker.errors.APIError) as err:
        c.remove()
    assert err.value.status_code == 409
    c.remove(force=True)


def test_run_non_zero_exit_is_container_error(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    name = names()
    with pytest.raises(docker.errors.ContainerError) as err:
        dockerpy.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 7"], name=name)
    assert err.value.exit_status == 7 and err.value.stderr == b"oops\n"
    assert err.value.image == "busybox" and err.value.command == ["sh", "-c", "echo oops >&2; exit 7"]
    assert isinstance(err.value.container, Container) and err.value.container.name == name
    assert "returned non-zero exit status 7" in str(err.value)
