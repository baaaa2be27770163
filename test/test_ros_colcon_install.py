"""The ROS install layout: ``colcon build`` of this repository into a temporary folder puts the executables in
``lib/mgcda_ros`` (where ``ros2 run`` and launch_ros look them up through the ament index), launch and config
files in ``share/mgcda_ros`` and the package marker in the ament index; the installed ``anomaly_node`` then
starts and answers a frame."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image

from mgcda_ros.ros_process import NodeProcess, Peer, wait_until

pytestmark = pytest.mark.ros

BUILD_TIMEOUT = 600.0
START_TIMEOUT = 600.0


def colcon() -> str:
    found = shutil.which("colcon", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions; scripts/setup.sh does)")
    return found


@pytest.fixture(scope="module")
def installed(repo_root: Path, tmp_path_factory) -> Path:
    """``colcon build`` of the repository; returns the package's install prefix."""
    work = tmp_path_factory.mktemp("colcon")
    started = time.monotonic()
    result = subprocess.run([colcon(), "--log-base", str(work / "log"), "build", "--base-paths", str(repo_root),
                             "--build-base", str(work / "build"), "--install-base", str(work / "install")],
                            cwd=work, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    print(f"colcon build took {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Summary: 1 package finished" in result.stdout, result.stdout[-3000:]
    return work / "install" / "mgcda_ros"


def test_colcon_install_has_the_ros_layout(installed: Path, monkeypatch: pytest.MonkeyPatch):
    for executable in ("anomaly_node", "anomaly_lifecycle_node"):
        path = installed / "lib" / "mgcda_ros" / executable
        assert path.is_file() and os.access(path, os.X_OK), sorted(p.name for p in installed.rglob("*") if p.is_file())
    assert not (installed / "bin").exists()  # ros2 run would not look there
    share = installed / "share" / "mgcda_ros"
    for name in ("package.xml", "launch/anomaly.launch.py", "config/anomaly.yaml"):
        assert (share / name).is_file(), name
    assert (installed / "share" / "ament_index" / "resource_index" / "packages" / "mgcda_ros").is_file()
    # the lookups ros2 run and the launch file make
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(installed))
    assert Path(get_package_prefix("mgcda_ros")) == installed
    assert Path(get_package_share_directory("mgcda_ros")) == share


def test_installed_node_starts_and_answers_a_frame(installed: Path, tmp_path: Path):
    site = next((installed / "lib").glob("python3*/site-packages"))
    # what sourcing install/setup.bash adds; the installed copy comes first on the path
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "AMENT_PREFIX_PATH": str(installed)}
    # cwd elsewhere: `python -c` puts the working directory (here the repository) first on the path
    where = subprocess.run([sys.executable, "-c", "import mgcda_ros; print(mgcda_ros.__file__)"], cwd=tmp_path,
                           env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where
    domain = (int(os.environ["ROS_DOMAIN_ID"]) + 17) % 200
    peer = Peer("colcon_camera", domain)
    proc = NodeProcess({"input_width": 64, "input_height": 32, "score": "msp", "max_age_ms": 0.0, "backend": "torch"},
                       domain, tmp_path,
                       command=(str(installed / "lib" / "mgcda_ros" / "anomaly_node"),), env=env)
    try:
        camera = peer.publisher(Image, "/image", depth=1)
        masks = peer.subscribe(Image, "/anomaly_mask")
        wait_until(lambda: camera.get_subscription_count() > 0 or not proc.alive(), START_TIMEOUT,
                   "the installed anomaly_node to subscribe")
        assert proc.alive(), proc.output()
        msg = Image(height=24, width=32, encoding="rgb8", step=96)
        msg.header.frame_id = "installed"
        msg.data = np.full((24, 32, 3), 120, np.uint8).tobytes()

        def answered() -> bool:
            camera.publish(msg)  # again until answered: the node may still be switching its input QoS
            return any(m.header.frame_id == "installed" for m in masks.messages())
        wait_until(answered, START_TIMEOUT, "a mask from the installed node", poll=0.5)
        mask = next(m for m in masks.messages() if m.header.frame_id == "installed")
        assert (mask.height, mask.width, mask.encoding) == (24, 32, "mono8")
    finally:
        peer.close()
        assert proc.stop() == 0, proc.output()[-3000:]
