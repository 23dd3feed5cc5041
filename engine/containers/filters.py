"""``docker ps`` selection over container records, as dockerd's daemon/list.go does it.

Pure functions: the caller (``admin.ContainerAdmin.list``) resolves what needs the stores first
(the ``ancestor`` images, the ``before``/``since`` containers) and hands the answers in.

dockerd's quirks kept on purpose, because clients see them:
- ``name``, ``id`` and ``status`` values are unanchored regular expressions (Go's ``filters.Match``:
  exact value first, then ``regexp.MatchString``); ``health`` is an exact match.
- ``id`` and ``name`` first narrow the candidates: an ``id`` value must be a unique ID prefix, so a
  substring from the middle of an ID matches nothing even though the later regex would.
- ``limit`` counts included containers and is checked before ``exited``/``status``/``health``/…,
  and any ``limit`` or ``status`` filter lists stopped containers too.
- ``before``/``since`` take a full ID or an exact name (no prefixes); the legacy ``before``/``since``
  query parameters are ignored by dockerd and so are not read here.
- ``isolation`` is accepted and ignored on Linux; ``is-task=true`` matches nothing (no swarm).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from engine import errdefs, ids
from engine.containers.model import Container, parse_time
from engine.images.filters import FilterMap, match_kv, validate

PS_FILTERS = (
    "ancestor", "before", "exited", "id", "isolation", "label", "name", "status", "health", "since",
    "volume", "network", "is-task", "publish", "expose",
)  # fmt: skip
STATES = frozenset({"created", "restarting", "running", "removing", "paused", "exited", "dead"})
HEALTH_STATES = frozenset({"starting", "healthy", "unhealthy", "none"})

_UINT = re.compile(r"[0-9]+")
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def _go_slice(values: Iterable[str]) -> str:
    return "[" + " ".join(values) + "]"


def _invalid(key: str, value: str) -> errdefs.InvalidParameter:
    # daemon/errors.go invalidFilter, as dockerd 28 words it.
    return errdefs.InvalidParameter(f"invalid filter '{key}={value}'")


def _atoi(value: str) -> int:
    """strconv.Atoi; dockerd relays its error untyped (a 500)."""
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise errdefs.Internal(f'strconv.Atoi: parsing "{value}": invalid syntax')
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise errdefs.Internal(f'strconv.Atoi: parsing "{value}": value out of range')
    return number


def _parse_uint16(text: str) -> int:
    if not _UINT.fullmatch(text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    if int(text) > 0xFFFF:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return int(text)


def parse_ports(key: str, values: Sequence[str]) -> frozenset[str]:
    """``publish``/``expose`` values (``80``, ``80/udp``, ``8000-8080/tcp``) as a set of ``port/proto``."""
    out: set[str] = set()
    for value in values:
        if ":" in value:
            raise errdefs.Internal(f"filter for '{key}' should not contain ':': {value}")
        # nat.SplitProtoPort: "80" → tcp, "80/" → tcp, "/x" → nothing.
        parts = value.split("/")
        if not value or not parts[0]:
            proto, port = "", ""
        elif len(parts) == 1 or not parts[1]:
            proto, port = "tcp", parts[0]
        else:
            proto, port = parts[1], parts[0]
        try:
            if not port:
                raise ValueError("Empty string specified for ports.")
            if "-" not in port:
                start = end = _parse_uint16(port)
            else:
                low, high = port.split("-")[:2]
                start, end = _parse_uint16(low), _parse_uint16(high)
                if end < start:
                    raise ValueError(f"Invalid range specified for the Port: {port}")
        except ValueError as e:
            raise errdefs.Internal(f"error while looking up for {key} {value}: {e}") from None
        out.update(f"{p}/{proto}" for p in range(start, end + 1))
    return frozenset(out)


@dataclass(frozen=True)
class PsFilters:
    """The ``filters`` of ``GET /containers/json`` after dockerd's foldFilter validation."""

    fields: Mapping[str, Sequence[str]]
    exited: tuple[int, ...] = ()
    is_task: bool | None = None
    publish: frozenset[str] = frozenset()
    expose: frozenset[str] = frozenset()
    lists_stopped: bool = False  # a status filter implies --all

    def values(self, key: str) -> Sequence[str]:
        return self.fields.get(key) or ()

    def match(self, key: str, source: str) -> bool:
        """filters.Args.Match: no values, an exact value, or an unanchored regex that matches."""
        values = self.values(key)
        if not values or source in values:
            return True
        for pattern in values:
            try:
                if re.search(pattern, source):
                    return True
            except re.error:
                continue  # Go skips values that do not compile
        return False

    def exact(self, key: str, source: str) -> bool:
        values = self.values(key)
        return not values or source in values


def parse(filters: FilterMap) -> PsFilters:
    """Validate in dockerd's order (keys, exited, status, is-task, health, publish, expose)."""
    validate(filters, PS_FILTERS)
    fields = {key: list(values) for key, values in filters.items()}
    exited = tuple(_atoi(v) for v in fields.get("exited", ()))
    for value in fields.get("status", ()):
        if value not in STATES:
            raise _invalid("status", value)
    is_task: bool | None = None
    if "is-task" in fields:
        values = fields["is-task"]
        if "true" in values:
            is_task = True
        elif "false" in values:
            is_task = False
        else:
            raise _invalid("is-task", _go_slice(values))
    for value in fields.get("health", ()):
        if value not in HEALTH_STATES:
            raise errdefs.InvalidParameter(f"Unrecognised filter value for health: {value}")
    return PsFilters(
        fields=fields,
        exited=exited,
        is_task=is_task,
        publish=parse_ports("publish", fields.get("publish", ())),
        expose=parse_ports("expose", fields.get("expose", ())),
        lists_stopped="status" in fields,
    )


def find_ref(containers: Iterable[Container], value: str) -> Container:
    """idOrNameFilter: a full ID, else an exact name (with or without "/"); dockerd answers a 500."""
    wanted = value.removeprefix("/")
    by_name: Container | None = None
    for c in containers:
        if c.id == value:
            return c
        if c.name.removeprefix("/") == wanted:
            by_name = c
    if by_name is None:
        raise errdefs.Internal(f"no such container {value}")
    return by_name


def created_at(c: Container) -> datetime:
    return parse_time(c.created) or _EPOCH


def newest_first(containers: Iterable[Container]) -> list[Container]:
    return sorted(containers, key=created_at, reverse=True)


def state_string(c: Container) -> str:
    """container.State.StateString from the record's flags."""
    st = c.state
    if st.running or st.paused or st.restarting:
        if st.paused:
            return "paused"
        if st.restarting:
            return "restarting"
        return "running"
    if st.status == "removing":
        return "removing"
    if st.dead or st.status == "dead":
        return "dead"
    if not st.has_been_started and st.status == "created":
        return "created"
    return st.status if st.status in STATES else "exited"


def is_running(c: Container) -> bool:
    # dockerd's State.Running stays true while paused and while a restart is pending.
    return c.state.running or c.state.paused or c.state.restarting


def health_string(c: Container) -> str:
    return "none" if c.state.health is None else c.state.health.status


def summary_ports(c: Container) -> list[tuple[int, int, str]]:
    """(private, public, proto) of every NetworkSettings.Ports entry, as the ps summary lists them."""
    out: list[tuple[int, int, str]] = []
    for key, bindings in ((c.network_settings or {}).get("Ports") or {}).items():
        port, _, proto = str(key).partition("/")
        if not port.isdigit():
            continue
        proto = proto or "tcp"
        if not bindings:
            out.append((int(port), 0, proto))
            continue
        for b in bindings:
            host_port = str((b or {}).get("HostPort") or "0")
            out.append((int(port), int(host_port) if host_port.isdigit() else 0, proto))
    return out


@dataclass
class Selection:
    """Everything ``select`` needs besides the records; ``ancestors`` is None without that filter."""

    filters: PsFilters
    all: bool = False
    limit: int = 0
    before: Container | None = None
    since: Container | None = None
    ancestors: set[str] | None = None
    names: Mapping[str, Sequence[str]] = field(default_factory=dict)


def _candidates(containers: Sequence[Container], sel: Selection) -> list[Container]:
    """filterByNameIDMatches: narrow by unique ID prefixes and name regexes before the walk."""
    names, id_values = sel.filters.values("name"), sel.filters.values("id")
    if not names and not id_values:
        return newest_first(containers)
    by_id = {c.id: c for c in containers}
    matches: set[str] = set()
    for value in id_values:
        found = ids.match_prefix(value, by_id)
        if len(found) == 1:
            matches.add(found[0])
    if names:
        for c in containers:
            if id_values and c.id not in matches:
                continue
            for name in sel.names.get(c.id) or [c.name]:
                if sel.filters.match("name", name) or sel.filters.match("name", name.removeprefix("/")):
                    matches.add(c.id)
    return newest_first(by_id[i] for i in matches)


def _volume_match(c: Container, values: Sequence[str]) -> bool:
    by_destination = {m.get("Destination") for m in c.mount_points if m.get("Destination")}
    by_name = {m.get("Name") or m.get("Source") for m in c.mount_points}
    return any(v in by_destination or v in by_name for v in values)


def _network_match(c: Container, values: Sequence[str]) -> bool:
    networks = (c.network_settings or {}).get("Networks")
    if networks is None:
        return False
    for value in values:
        if value in networks:
            return True
        if any(nw and str(nw.get("NetworkID") or "").startswith(value) for nw in networks.values()):
            return True
    return False


def _ports_match(c: Container, f: PsFilters) -> bool:
    for private, public, proto in summary_ports(c):
        if f"{public}/{proto}" in f.publish or f"{private}/{proto}" in f.expose:
            return True
    return False


def select(containers: Sequence[Container], sel: Selection) -> list[Container]:
    """The containers ``docker ps`` shows for ``sel``, newest first (includeContainerInList)."""
    f = sel.filters
    show_stopped = sel.all or f.lists_stopped
    before, since = sel.before, sel.since
    out: list[Container] = []
    for c in _candidates(containers, sel):
        if before is not None:
            if c.id == before.id:
                before = None
            continue
        if since is not None and c.id == since.id:
            break
        if not is_running(c) and not show_stopped and sel.limit <= 0:
            continue
        if not f.match("name", c.name) and not f.match("name", c.name.removeprefix("/")):
            continue
        if not f.match("id", c.id):
            continue
        if f.is_task is True:  # no container is a swarm task here
            continue
        if not match_kv(f.values("label"), c.labels):
            continue
        if sel.limit > 0 and len(out) == sel.limit:
            break
        if f.exited and not (
            c.state.exit_code in f.exited and not is_running(c) and parse_time(c.state.started_at) is not None
        ):
            continue
        if not f.match("status", state_string(c)):
            continue
        if not f.exact("health", health_string(c)):
            continue
        if "volume" in f.fields and not _volume_match(c, f.values("volume")):
            continue
        if sel.ancestors is not None and c.image_id not in sel.ancestors:
            continue
        if "network" in f.fields and not _network_match(c, f.values("network")):
            continue
        if (f.publish or f.expose) and not _ports_match(c, f):
            continue
        out.append(c)
    return out
