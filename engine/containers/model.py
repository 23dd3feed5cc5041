"""The container record: what ``config.v2.json`` holds and what inspect and ps render.

Config, HostConfig and NetworkingConfig are kept as the client sent them (merged with the
image defaults), because ``docker inspect`` must give them back whole and compose compares
them. Everything the engine decides itself lives in typed fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA = 1
ZERO_TIME = "0001-01-01T00:00:00Z"


def now_rfc3339() -> str:
    return format_time(datetime.now(UTC))


def format_time(t: datetime) -> str:
    """RFC3339Nano as Go prints it (trailing zeros of the fraction dropped)."""
    t = t.astimezone(UTC)
    frac = f"{t.microsecond:06d}".rstrip("0")
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def parse_time(s: str) -> datetime | None:
    if not s or s == ZERO_TIME:
        return None
    head, _, rest = s.rstrip("Z").partition(".")
    micro = int((rest + "000000")[:6]) if rest else 0
    return datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC, microsecond=micro)


@dataclass
class Health:
    status: str = "starting"
    failing_streak: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class State:
    status: str = "created"
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    health: Health | None = None
    # dockerd's HasBeenManuallyStopped: stop/kill by a user suppresses restart policies.
    manually_stopped: bool = False
    has_been_started: bool = False

    def set_running(self, pid: int) -> None:
        self.status, self.running, self.paused, self.restarting = "running", True, False, False
        self.pid, self.exit_code, self.error = pid, 0, ""
        self.oom_killed, self.dead = False, False
        self.started_at = now_rfc3339()
        self.has_been_started = True

    def set_stopped(
        self, exit_code: int, oom_killed: bool = False, error: str = "", finished_at: str | None = None
    ) -> None:
        self.status, self.running, self.paused, self.restarting = "exited", False, False, False
        self.pid, self.exit_code, self.oom_killed, self.error = 0, exit_code, oom_killed, error
        self.finished_at = finished_at or now_rfc3339()
        if self.health is not None:
            # dockerd's CloseMonitorChannel: a stopped container's health reads unhealthy.
            self.health.status = "unhealthy"

    def set_restarting(self, exit_code: int, oom_killed: bool = False) -> None:
        """dockerd's SetRestarting: Running stays true (rm/stop/kill treat it as running)."""
        self.set_stopped(exit_code, oom_killed)
        self.status, self.running, self.restarting = "restarting", True, True

    @property
    def alive(self) -> bool:
        """Running or between two runs of a restart policy (dockerd's IsRunning)."""
        return self.running or self.restarting

    def to_docker(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Status": self.status,
            "Running": self.running,
            "Paused": self.paused,
            "Restarting": self.restarting,
            "OOMKilled": self.oom_killed,
            "Dead": self.dead,
            "Pid": self.pid,
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": self.started_at,
            "FinishedAt": self.finished_at,
        }
        if self.health is not None:
            out["Health"] = {
                "Status": self.health.status,
                "FailingStreak": self.health.failing_streak,
                "Log": self.health.log,
            }
        return out


@dataclass
class Container:
    id: str
    name: str  # with the leading "/"
    created: str
    image_id: str  # "sha256:<hex>"
    path: str
    args: list[str]
    config: dict[str, Any]
    host_config: dict[str, Any]
    networking_config: dict[str, Any] = field(default_factory=dict)
    state: State = field(default_factory=State)
    restart_count: int = 0
    snapshot_key: str = ""
    log_path: str = ""
    resolv_conf_path: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    mount_points: list[dict[str, Any]] = field(default_factory=list)
    network_settings: dict[str, Any] = field(default_factory=dict)
    runtime: str = "runc"
    platform: str = "linux"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["schema"] = SCHEMA
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Container:
        data = {k: v for k, v in record.items() if k != "schema"}
        state = dict(data.pop("state", {}))
        health = state.pop("health", None)
        data["state"] = State(**state, health=Health(**health) if health else None)
        return cls(**data)
