"""docker-py's prune calls and `df()` as `docker system prune` sees them: the answer shapes with a
label filter (this daemon is shared by other test modules), and the empty build cache.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...).
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from conftest import ContainerNames


@pytest.fixture(scope="module", autouse=True)
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> None:
    dockerpy.images.load(busybox_tar.read_bytes())


def test_prune_answers(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    label = f"org.skiff.test.pyprune={names.prefix}"
    key, value = label.split("=")
    gone = dockerpy.containers.run(
        "busybox", ["sh", "-c", "head -c 2000 /dev/zero > /f"], name=names("gone"), labels={key: value},
        network_mode="none",
    )  # fmt: skip
    assert gone == b""
    kept = dockerpy.containers.create("busybox", "true", name=names("kept"))
    report = dockerpy.containers.prune(filters={"label": label})
    assert report["SpaceReclaimed"] == 2000 and len(report["ContainersDeleted"]) == 1
    assert dockerpy.containers.get(kept.id).id == kept.id
    assert dockerpy.containers.prune(filters={"label": label}) == {
        "ContainersDeleted": None,
        "SpaceReclaimed": 0,
    }
    assert dockerpy.networks.prune(filters={"label": label}) == {"NetworksDeleted": None}
    # dockerd's volume service starts the list empty, not nil
    assert dockerpy.volumes.prune(filters={"label": label}) == {"VolumesDeleted": [], "SpaceReclaimed": 0}
    assert dockerpy.images.prune(filters={"label": label, "dangling": False}) == {
        "ImagesDeleted": None,
        "SpaceReclaimed": 0,
    }
    nothing = {"CachesDeleted": None, "SpaceReclaimed": 0}
    assert dockerpy.api.prune_builds() == nothing
    assert dockerpy.api.prune_builds(filters={"label": label}, keep_storage=1, all=True) == nothing
    with pytest.raises(docker.errors.APIError) as err:
        dockerpy.api.prune_builds(filters={"until": ["1h", "2h"]})
    assert err.value.response.status_code == 400
    assert "failed to prune build cache: filters expect only one value" in str(err.value)


def test_df_build_cache_is_null(dockerpy: docker.DockerClient) -> None:
    df = dockerpy.df()
    assert df["BuildCache"] is None  # BuildKit lists no record: Go's nil slice
    assert isinstance(df["LayersSize"], int) and df["LayersSize"] > 0
