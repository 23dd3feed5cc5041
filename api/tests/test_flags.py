"""skiffd flags and daemon.json → DaemonConfig, with dockerd's merge rules and messages."""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from api.flags import ConfigError, go_value, load_config
from network.ipam import AddressPool


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
    path = write(tmp_path, {"debug": True, "data-root": "/x", "fixed-cidr": "10.0.0.0/24"})
    with pytest.raises(ConfigError) as exc:
        load_config(["--config-file", path])
    assert str(exc.value).endswith(
        "the following directives don't match any configuration option: debug, fixed-cidr"
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


# ---- bridge networking: --bip, --default-address-pool, -b, --ip-forward, --iptables ------------


def test_network_defaults(tmp_path):
    config = load_config(["--config-file", write(tmp_path, {})])
    assert config.bip is None and config.default_address_pools == ()
    assert config.bridge == "skiff0"
    assert config.ip_forward is True and config.iptables is True  # dockerd's defaults
    assert config.outbound_reject_interface is None


def test_network_flags(tmp_path):
    config = load_config(
        [
            "--config-file",
            write(tmp_path, {}),
            "--bip",
            "172.30.0.5/16",
            "--default-address-pool",
            "base=10.10.0.0/16,size=24",
            "--default-address-pool",
            "Base=10.20.0.0/15, size=20",
            "-b",
            "skiffx",
            "--ip-forward=false",
            "--iptables",
            "--outbound-reject-interface",
            "eth0",
        ]
    )
    assert config.bip == IPv4Interface("172.30.0.5/16")
    assert config.bip.network == IPv4Network("172.30.0.0/16")
    assert config.default_address_pools == (
        AddressPool(IPv4Network("10.10.0.0/16"), 24),
        AddressPool(IPv4Network("10.20.0.0/15"), 20),
    )
    assert config.bridge == "skiffx"
    assert config.ip_forward is False and config.iptables is True
    assert config.outbound_reject_interface == "eth0"


@pytest.mark.parametrize(("text", "value"), [("1", True), ("True", True), ("F", False), ("0", False)])
def test_bool_flags_take_go_spellings(tmp_path, text, value):
    config = load_config(["--config-file", write(tmp_path, {}), f"--iptables={text}", f"--ip-forward={text}"])
    assert config.iptables is value and config.ip_forward is value


def test_bool_flag_rejects_other_words(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_config(["--config-file", write(tmp_path, {}), "--iptables=maybe"])
    assert 'strconv.ParseBool: parsing "maybe": invalid syntax' in capsys.readouterr().err


def test_network_keys_in_config_file(tmp_path):
    path = write(
        tmp_path,
        {
            "bip": "192.168.200.1/24",
            "default-address-pools": [{"base": "10.30.0.0/16", "size": 26}],
            "bridge": "none",
            "ip-forward": False,
            "iptables": False,
        },
    )
    with pytest.raises(ConfigError, match="-b none & --bip"):
        load_config(["--config-file", path])
    path = write(
        tmp_path,
        {
            "bip": "192.168.200.1/24",
            "default-address-pools": [{"base": "10.30.0.0/16", "size": 26}],
            "bridge": "skiffy",
            "ip-forward": False,
            "iptables": False,
        },
    )
    config = load_config(["--config-file", path])
    assert config.bip == IPv4Interface("192.168.200.1/24")
    assert config.default_address_pools == (AddressPool(IPv4Network("10.30.0.0/16"), 26),)
    assert (config.bridge, config.ip_forward, config.iptables) == ("skiffy", False, False)


def test_bridge_none_disables_the_default_bridge(tmp_path):
    assert load_config(["--config-file", write(tmp_path, {}), "-b", "none"]).bridge is None


def test_network_flag_conflicts_with_file_key(tmp_path):
    path = write(tmp_path, {"iptables": True, "default-address-pools": [{"base": "10.1.0.0/16", "size": 24}]})
    with pytest.raises(ConfigError) as exc:
        load_config(
            ["--config-file", path, "--iptables=false", "--default-address-pool", "base=10.2.0.0/16,size=24"]
        )
    assert "iptables: (from flag: false, from file: true)" in str(exc.value)
    pools = "(from flag: [base=10.2.0.0/16,size=24], from file: [map[base:10.1.0.0/16 size:24]])"
    assert f"default-address-pools: {pools}" in str(exc.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bip", "172.30.0.1"], "invalid CIDR address: 172.30.0.1"),
        (["--bip", "bogus/16"], "invalid CIDR address: bogus/16"),
        (["--bip", "fd00::1/64"], "invalid CIDR address: fd00::1/64"),
        (["--bip", "172.30.0.0/16"], "the bridge needs a host address of 172.30.0.0/16, not 172.30.0.0"),
        (["--bip", "172.30.255.255/16"], "not 172.30.255.255"),
        (
            ["--default-address-pool", "base=10.0.0.0/8"],
            'invalid argument "base=10.0.0.0/8" for "--default-address-pool" flag: '
            "invalid default address pool",
        ),
        (
            ["--default-address-pool", "10.0.0.0/8"],
            "invalid field '10.0.0.0/8' must be a key=value pair",
        ),
        (["--default-address-pool", "base=10.0.0.0/16,size=8"], "invalid pools size: 8"),
        (["-b", "a-bridge-name-too-long"], "invalid bridge name: 'a-bridge-name-too-long'"),
        (["-b", "br/0"], "invalid bridge name"),
        (
            ["--outbound-reject-interface", "eth0", "--iptables=false"],
            "needs an interface name and --iptables=true",
        ),
    ],
)
def test_invalid_network_values(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(["--config-file", write(tmp_path, {}), *argv])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"iptables": "false"}, 'invalid value for "iptables": expected a boolean, got "false"'),
        ({"ip-forward": 0}, 'invalid value for "ip-forward": expected a boolean, got 0'),
        ({"default-address-pools": "base=10.0.0.0/8,size=16"}, "expected a list"),
        ({"default-address-pools": [{"base": "10.0.0.0/8"}]}, 'expected {"base": "<CIDR>", "size": <int>}'),
        ({"default-address-pools": [{"base": "10.0.0.0/8", "size": "16"}]}, "expected {"),
        ({"bridge": 0}, 'invalid value for "bridge": expected a string, got 0'),
    ],
)
def test_bad_network_file_values(tmp_path, data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(["--config-file", write(tmp_path, data)])
