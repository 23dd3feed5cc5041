"""Isolation, FORWARD-DROP hosts, masquerade and hairpin, in a network namespace playing the host.

The host's own forwarding settings and FORWARD policy are not the tests' to change, so
forwarding_scenario.py runs under ``unshare --net --mount``: a namespace with FORWARD policy DROP,
br_netfilter on, ip_forward on (set by the driver, as dockerd's --ip-forward does), an "outside"
namespace behind the default route and the REJECT rule for skiff's bridges. All of it goes away
with the process, whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("forwarding") / "netns"
    done = subprocess.run(
        [
            "unshare",
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-m",
            "network.tests.forwarding_scenario",
            str(root),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_policy_drop_is_in_force_but_skiff_bridges_pass(outcome: dict[str, str]):
    assert outcome["control_plain_bridge"] == "TimeoutError"  # a bridge skiff did not make stays dropped
    assert outcome["same_bridge"] == "b"
    assert outcome["internal_within"] == "e"
    assert outcome["host_to_container"] == "c"
    assert outcome["ip_forward"] == "1"
    assert outcome["subnets"] == ["172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16"]


def test_networks_are_isolated(outcome: dict[str, str]):
    assert outcome["default_to_user"] == "TimeoutError"
    assert outcome["user_to_default"] == "TimeoutError"
    assert outcome["default_to_internal"] == "TimeoutError"
    # An internal network has no default route at all.
    assert outcome["internal_to_default"] == "OSError"
    assert outcome["outbound_from_internal"] == "OSError"


def test_outbound_is_masqueraded_and_the_test_reject_rule_wins(outcome: dict[str, str]):
    assert outcome["outbound_rejected"] == "ConnectionRefusedError"
    assert outcome["outbound_without_reject"] == "198.51.100.1"  # seen from outside as the host
    assert outcome["outbound_from_user_network"] == "198.51.100.1"


def test_published_ports_loopback_and_hairpin(outcome: dict[str, str]):
    assert outcome["published_loopback"] == "b"
    assert outcome["published_outside_address"] == "b"
    assert outcome["published_loopback_a"] == "a"
    assert outcome["published_only_on_loopback"] == "ConnectionRefusedError"
    assert outcome["hairpin_other"] == "b"
    assert outcome["hairpin_gateway"] == "b"
    assert outcome["hairpin_self"] == "b"


def test_close_removes_every_rule_and_link(outcome: dict[str, str]):
    before, after = outcome["rules"], outcome["rules_after"]
    assert "-A FORWARD -j SKIFF-FORWARD" in before and "-A POSTROUTING -j SKIFF-POSTROUTING" in before
    assert "SKIFF" not in after
    assert ":FORWARD DROP" in after  # the policy skiff found is left alone
    assert "skiff-test" in after  # and so is a rule it did not make
    assert "skiff0" not in outcome["links_after"]
    assert "br-" not in outcome["links_after"] and "veth" not in outcome["links_after"]
