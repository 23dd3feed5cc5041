"""``docker ps`` selection (engine/containers/filters.py) over in-memory records, table-driven.

Expectations and error texts were checked against the reference dockerd (20.10; dockerd 28 writes
``invalid filter`` in lower case, which skiff follows).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine import errdefs
from engine.containers import filters as f
from engine.containers.model import Container, Health, State, format_time

IMG_A = "sha256:" + "a" * 64
IMG_B = "sha256:" + "b" * 64
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def mk(
    name: str,
    n: int,
    *,
    state: str = "running",
    exit_code: int = 0,
    labels: dict[str, str] | None = None,
    image: str = IMG_A,
    health: str | None = None,
    mounts: Sequence[dict[str, Any]] = (),
    networks: dict[str, Any] | None = None,
    ports: dict[str, Any] | None = None,
) -> Container:
    """A record created ``n`` seconds after T0 whose ID starts with ``n`` in hex."""
    st = State()
    if state in ("running", "paused", "restarting"):
        st.status, st.running, st.has_been_started = state, True, True
        st.started_at = format_time(T0 + timedelta(seconds=n))
        st.paused = state == "paused"
        st.restarting = state == "restarting"
    elif state == "exited":
        st.status, st.has_been_started, st.exit_code = "exited", True, exit_code
        st.started_at = format_time(T0 + timedelta(seconds=n))
    elif state == "created":
        st.exit_code = exit_code
    else:
        st.status = state
        st.dead = state == "dead"
    if health is not None:
        st.health = Health(status=health)
    return Container(
        id=f"{n:02x}" + "c" * 62,
        name="/" + name,
        created=format_time(T0 + timedelta(seconds=n)),
        image_id=image,
        path="sleep",
        args=["10"],
        config={"Image": "busybox", "Labels": labels or {}},
        host_config={},
        state=st,
        mount_points=list(mounts),
        network_settings={
            "Networks": networks if networks is not None else {"bridge": {"NetworkID": "9f" * 32}},
            "Ports": ports or {},
        },
    )


WEB = mk(
    "web", 1, labels={"app": "web", "tier": "front"}, ports={"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
)
DB = mk(
    "db",
    2,
    state="exited",
    exit_code=3,
    labels={"app": "db"},
    mounts=[{"Type": "volume", "Name": "dbdata", "Source": "/v/dbdata", "Destination": "/var/lib/db"}],
)
JOB = mk("job", 3, state="exited", exit_code=0, image=IMG_B, health="unhealthy")
NEW = mk("new", 4, state="created")
HEALTHY = mk("api-1", 5, health="healthy", networks={"mynet": {"NetworkID": "12ab" + "0" * 60}},
             ports={"53/udp": None, "443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8443"}]})  # fmt: skip
PAUSED = mk("pz", 6, state="paused", mounts=[{"Type": "bind", "Source": "/srv/data", "Destination": "/data"}])
RESTARTING = mk("rs", 7, state="restarting", exit_code=1)
ALL = [WEB, DB, JOB, NEW, HEALTHY, PAUSED, RESTARTING]


def names(
    filters: dict[str, list[str]] | None = None,
    *,
    all: bool = True,
    limit: int = 0,
    ancestors: set[str] | None = None,
    records: Sequence[Container] = ALL,
) -> list[str]:
    parsed = f.parse(filters or {})
    before = since = None
    for value in parsed.values("before"):
        before = f.find_ref(records, value)
    for value in parsed.values("since"):
        since = f.find_ref(records, value)
    sel = f.Selection(parsed, all=all, limit=limit, before=before, since=since, ancestors=ancestors)
    return [c.name.lstrip("/") for c in f.select(records, sel)]


NEWEST_FIRST = ["rs", "pz", "api-1", "new", "job", "db", "web"]


@pytest.mark.parametrize(
    ("filters", "kwargs", "expected"),
    [
        # running (and paused, restarting) only by default; newest first
        (None, {"all": False}, ["rs", "pz", "api-1", "web"]),
        (None, {}, NEWEST_FIRST),
        # limit implies --all and counts what is shown
        (None, {"all": False, "limit": 2}, ["rs", "pz"]),
        (None, {"all": False, "limit": 1}, ["rs"]),
        # limit is checked before status: the two newest are looked at, only one is exited
        ({"status": ["exited"]}, {"limit": 2}, ["job", "db"]),
        ({"label": ["app"]}, {"all": False, "limit": 1}, ["db"]),
        # name: unanchored regex, with or without the leading slash
        ({"name": ["^/web$"]}, {}, ["web"]),
        ({"name": ["^web$"]}, {}, ["web"]),
        ({"name": ["b"]}, {}, ["job", "db", "web"]),
        ({"name": ["web", "db"]}, {}, ["db", "web"]),
        ({"name": ["[invalid"]}, {}, []),
        # id: a unique prefix (or full id); a substring from the middle matches nothing
        ({"id": ["01"]}, {}, ["web"]),
        ({"id": [WEB.id]}, {}, ["web"]),
        ({"id": ["cccc"]}, {}, []),
        ({"id": ["0"]}, {}, []),  # ambiguous prefix
        ({"id": ["01", "02"]}, {}, ["db", "web"]),
        ({"id": ["01"], "name": ["db"]}, {}, []),
        # label: every value must hold
        ({"label": ["app"]}, {}, ["db", "web"]),
        ({"label": ["app=web"]}, {}, ["web"]),
        ({"label": ["app", "tier=front"]}, {}, ["web"]),
        ({"label": ["app=nope"]}, {}, []),
        # status: implies --all
        ({"status": ["exited"]}, {"all": False}, ["job", "db"]),
        ({"status": ["created"]}, {"all": False}, ["new"]),
        ({"status": ["paused"]}, {}, ["pz"]),
        ({"status": ["restarting"]}, {}, ["rs"]),
        ({"status": ["running"]}, {}, ["api-1", "web"]),
        ({"status": ["running", "paused"]}, {}, ["pz", "api-1", "web"]),
        # exited: only containers that ran and stopped
        ({"exited": ["0"]}, {}, ["job"]),
        ({"exited": ["3"]}, {}, ["db"]),
        ({"exited": ["0", "3"]}, {}, ["job", "db"]),
        ({"exited": ["1"]}, {}, []),  # the restarting container is not exited
        # health: exact; "none" for containers without a healthcheck
        ({"health": ["healthy"]}, {}, ["api-1"]),
        ({"health": ["unhealthy"]}, {}, ["job"]),
        ({"health": ["none"]}, {"all": False}, ["rs", "pz", "web"]),
        # isolation is ignored on Linux; is-task=false is everything, true nothing
        ({"isolation": ["hyperv"]}, {}, NEWEST_FIRST),
        ({"is-task": ["false"]}, {}, NEWEST_FIRST),
        ({"is-task": ["true"]}, {}, []),
        # volume: by name, source (bind) or destination
        ({"volume": ["dbdata"]}, {}, ["db"]),
        ({"volume": ["/var/lib/db"]}, {}, ["db"]),
        ({"volume": ["/srv/data"]}, {}, ["pz"]),
        ({"volume": ["/data", "dbdata"]}, {}, ["pz", "db"]),
        ({"volume": ["other"]}, {}, []),
        # network: by name or network ID prefix
        ({"network": ["mynet"]}, {}, ["api-1"]),
        ({"network": ["12ab"]}, {}, ["api-1"]),
        ({"network": ["bridge"]}, {"all": False}, ["rs", "pz", "web"]),
        # publish / expose, with ranges and protocols
        ({"publish": ["8080"]}, {}, ["web"]),
        ({"publish": ["8000-8500/tcp"]}, {}, ["api-1", "web"]),
        ({"publish": ["8080/udp"]}, {}, []),
        ({"expose": ["53/udp"]}, {}, ["api-1"]),
        ({"expose": ["80"]}, {}, ["web"]),
        ({"expose": ["80", "443"]}, {}, ["api-1", "web"]),
        # before / since: by full ID or exact name, exclusive
        ({"before": ["job"]}, {}, ["db", "web"]),
        ({"since": ["job"]}, {}, ["rs", "pz", "api-1", "new"]),
        ({"since": ["/db"], "before": [PAUSED.id]}, {}, ["api-1", "new", "job"]),
        ({"since": ["web"]}, {"all": False}, ["rs", "pz", "api-1"]),
    ],
)
def test_select(filters: dict[str, list[str]] | None, kwargs: dict[str, Any], expected: list[str]) -> None:
    assert names(filters, **kwargs) == expected


def test_ancestor_set() -> None:
    assert names({"ancestor": ["x"]}, ancestors={IMG_B}) == ["job"]
    assert names({"ancestor": ["x"]}, ancestors={IMG_A, IMG_B}) == NEWEST_FIRST
    # an ancestor that resolved to nothing excludes everything
    assert names({"ancestor": ["x"]}, ancestors=set()) == []


@pytest.mark.parametrize(
    ("filters", "kind", "message"),
    [
        ({"foo": ["x"]}, errdefs.InvalidParameter, "invalid filter 'foo'"),
        ({"status": ["foo"]}, errdefs.InvalidParameter, "invalid filter 'status=foo'"),
        ({"status": ["run"]}, errdefs.InvalidParameter, "invalid filter 'status=run'"),
        ({"is-task": ["foo"]}, errdefs.InvalidParameter, "invalid filter 'is-task=[foo]'"),
        ({"health": ["foo"]}, errdefs.InvalidParameter, "Unrecognised filter value for health: foo"),
        ({"exited": ["x"]}, errdefs.Internal, 'strconv.Atoi: parsing "x": invalid syntax'),
        ({"publish": ["80:80"]}, errdefs.Internal, "filter for 'publish' should not contain ':': 80:80"),
        (
            {"publish": ["abc"]},
            errdefs.Internal,
            'error while looking up for publish abc: strconv.ParseUint: parsing "abc": invalid syntax',
        ),
        (
            {"expose": ["80-70/tcp"]},
            errdefs.Internal,
            "error while looking up for expose 80-70/tcp: Invalid range specified for the Port: 80-70",
        ),
        (
            {"expose": ["70000"]},
            errdefs.Internal,
            'error while looking up for expose 70000: strconv.ParseUint: parsing "70000": value out of range',
        ),
        (
            {"expose": [""]},
            errdefs.Internal,
            "error while looking up for expose : Empty string specified for ports.",
        ),
        # keys are validated before values
        ({"exited": ["x"], "foo": ["y"]}, errdefs.InvalidParameter, "invalid filter 'foo'"),
    ],
)
def test_parse_errors(filters: dict[str, list[str]], kind: type[errdefs.EngineError], message: str) -> None:
    with pytest.raises(kind) as err:
        f.parse(filters)
    assert err.value.message == message


@pytest.mark.parametrize("ref", ["nope", WEB.id[:12]])
def test_before_since_need_full_id_or_name(ref: str) -> None:
    with pytest.raises(errdefs.Internal) as err:
        f.find_ref(ALL, ref)
    assert err.value.message == f"no such container {ref}"


def test_find_ref() -> None:
    assert f.find_ref(ALL, WEB.id) is WEB
    assert f.find_ref(ALL, "/db") is DB
    assert f.find_ref(ALL, "db") is DB


def test_parse_ports() -> None:
    assert f.parse_ports("publish", ["80", "90/", "53/udp", "1-3/sctp"]) == {
        "80/tcp", "90/tcp", "53/udp", "1/sctp", "2/sctp", "3/sctp",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("record", "expected"),
    [(WEB, "running"), (DB, "exited"), (NEW, "created"), (PAUSED, "paused"), (RESTARTING, "restarting"),
     (mk("x", 9, state="removing"), "removing"), (mk("y", 9, state="dead"), "dead")],
)  # fmt: skip
def test_state_string(record: Container, expected: str) -> None:
    assert f.state_string(record) == expected


def test_status_matches_regex_after_validation() -> None:
    # "created" as a regex also matches nothing else; the value must be a valid state first.
    assert names({"status": ["created", "exited"]}) == ["new", "job", "db"]
