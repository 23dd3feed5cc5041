"""skiffd flags and daemon.json → DaemonConfig, with dockerd's merge rules and messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from api.flags import ConfigError, go_value, load_config


def write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_defaults(tmp_path):
    config = load_config(["--config-file", write(tmp_path, {})])
    assert config.hosts == ("unix:///run/skiff/skiff.sock",)
    assert config.data_root == Path("/var/lib/skiff")
    assert config.exec_root == Path("/run/skiff")
    assert config.pidfile == Path("/run/skiff/skiffd.pid")
    assert config.group is None and config.log_level == "info"
    assert config.runtimes == {"runc": "runc"} and config.default_runtime == "runc"


def test_flags(tmp_path):
    config = load_config(
        [
            "--config-file",
            write(tmp_path, {}),
            "-H",
            "unix:///tmp/a.sock",
            "--host",
            "unix:///tmp/b.sock",
            "-H",
            "unix://",
            "--data-root",
            "/srv/skiff",
            "--exec-root",
            "/run/s2",
            "-G",
            "wheel",
            "-l",
            "debug",
            "--add-runtime",
            "crun=/usr/bin/crun",
            "--default-runtime",
            "crun",
            "--insecure-registry",
            "localhost:5000",
            "--registry-mirror",
            "https://m.example",
            "--dns",
            "10.0.0.2",
            "--label",
            "a=b",
            "--label",
            "c=d",
        ]
    )
    assert config.hosts == ("unix:///tmp/a.sock", "unix:///tmp/b.sock", "unix:///run/skiff/skiff.sock")
    assert config.data_root == Path("/srv/skiff") and config.exec_root == Path("/run/s2")
    assert config.pidfile == Path("/run/s2/skiffd.pid")
    assert config.group == "wheel" and config.log_level == "debug"
    assert config.runtimes == {"runc": "runc", "crun": "/usr/bin/crun"} and config.default_runtime == "crun"
    assert config.insecure_registries == ("localhost:5000",)
    assert config.registry_mirrors == ("https://m.example",)
    assert config.dns == ("10.0.0.2",) and config.labels == ("a=b", "c=d")


def test_config_file_settings(tmp_path):
    path = write(
        tmp_path,
        {
            "hosts": ["unix:///tmp/f.sock"],
            "data-root": "/srv/f",
            "pidfile": "/tmp/f.pid",
            "log-level": "warn",
            "runtimes": {"crun": {"path": "/usr/bin/crun", "runtimeArgs": []}},
            "default-runtime": "crun",
            "labels": ["x=y"],
        },
    )
    config = load_config(["--config-file", path, "--dns", "1.1.1.1"])
    assert config.hosts == ("unix:///tmp/f.sock",) and config.data_root == Path("/srv/f")
    assert config.pidfile == Path("/tmp/f.pid") and config.log_level == "warn"
    assert config.runtimes == {"runc": "runc", "crun": "/usr/bin/crun"} and config.default_runtime == "crun"
    assert config.labels == ("x=y",) and config.dns == ("1.1.1.1",)


def test_conflict_between_flag_and_file(tmp_path):
    path = write(tmp_path, {"data-root": "/from/file", "labels": ["a=1", "b=2"]})
    with pytest.raises(ConfigError) as exc:
        load_config(["--config-file", path, "--data-root", "/from/flag", "--label", "c=3"])
    assert str(exc.value) == (
        f"unable to configure the daemon with file {path}: the following directives are specified both as a "
        "flag and in the configuration file: data-root: (from flag: /from/flag, from file: /from/file), "
        "labels: (from flag: [c=3], from file: [a=1 b=2])"
    )


def test_hosts_flag_conflicts_with_hosts_key(tmp_path):
    path = write(tmp_path, {"hosts": ["unix:///tmp/x.sock"]})
    with pytest.raises(
        ConfigError,
        match=re.escape("hosts: (from flag: [unix:///tmp/y.sock], from file: [unix:///tmp/x.sock])"),
    ):
        load_config(["--config-file", path, "-H", "unix:///tmp/y.sock"])


def test_unknown_file_key(tmp_path):
    path = write(tmp_path, {"debug": True, "data-root": "/x", "bip": "10.0.0.1/24"})
    with pytest.raises(ConfigError) as exc:
        load_config(["--config-file", path])
    assert str(exc.value).endswith(
        "the following directives don't match any configuration option: debug, bip"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dns": "8.8.8.8"}, 'invalid value for "dns": expected a list of strings'),
        ({"data-root": 5}, 'invalid value for "data-root": expected a string'),
        ({"runtimes": {"x": "/bin/x"}}, 'runtime x needs a "path"'),
    ],
)
def test_bad_file_values(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["--config-file", write(tmp_path, data)])


def test_missing_explicit_config_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_config(["--config-file", str(missing)])


def test_bad_json_config_file(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match=f"unable to configure the daemon with file {path}"):
        load_config(["--config-file", str(path)])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-H", "tcp://0.0.0.0:2375"], "only unix:// hosts are supported: tcp://0.0.0.0:2375"),
        (["-H", "/var/run/x.sock"], "only unix:// hosts are supported"),
        (["-H", "fd://"], "only unix:// hosts are supported"),
        (["-H", "unix://relative.sock"], "unix socket path must be absolute"),
        (["--add-runtime", "runc=/bin/runc"], "runtime name 'runc' is reserved"),
        (["--add-runtime", "broken"], "invalid runtime"),
        (["--default-runtime", "kata"], "specified default runtime 'kata' does not exist"),
        (["--dns", "not-an-ip"], "IP address is not correctly formatted: not-an-ip"),
        (["--label", "novalue"], "bad attribute format: novalue"),
        (
            ["--insecure-registry", "http://r:5000"],
            "insecure registry http://r:5000 should not contain '://'",
        ),
        (["--registry-mirror", "ftp://m"], 'invalid mirror: unsupported scheme "ftp" in "ftp://m"'),
    ],
)
def test_invalid_values(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(["--config-file", write(tmp_path, {}), *argv])


def test_invalid_log_level_in_file(tmp_path):
    with pytest.raises(ConfigError, match="unable to parse logging level: verbose"):
        load_config(["--config-file", write(tmp_path, {"log-level": "verbose"})])


def test_go_value():
    assert go_value("x") == "x"
    assert go_value(["a", "b"]) == "[a b]"
    assert go_value({"b": 1, "a": [True]}) == "map[a:[true] b:1]"
