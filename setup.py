"""ament_python package ``mgcda_ros`` holding the Python packages ``mgcda_core`` and ``mgcda_ros``.

Builds with colcon on a ROS 2 machine and installs with pip anywhere.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "mgcda_ros"
HERE = Path(__file__).parent


def requirements() -> list[str]:
    """Runtime requirements: requirements.txt minus the ROS wheels and test-only tools (colcon machines have ROS)."""
    skip = ("ros-kilted-", "pytest", "scikit-image", "colcon-")
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#") and not line.startswith(skip)]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["mgcda_core", "mgcda_core.*", "mgcda_ros", "mgcda_ros.*"]),
    package_data={"mgcda_core": ["assets/**/*", "export/*.txt"], "mgcda_ros": ["assets/**/*"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config", glob("config/*.xml")),
        (f"share/{PACKAGE}/config/presets", glob("config/presets/*.yaml")),
    ],
    install_requires=requirements(),
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="mgcda maintainers",
    description="Road anomaly segmentation (MGCDA + Synboost) for ROS 2",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "anomaly_node = mgcda_ros.node:main",
            "anomaly_lifecycle_node = mgcda_ros.lifecycle_node:main",
            "mgcda-train = mgcda_core.train:main",
            "mgcda-evaluate = mgcda_core.evaluate:main",
            "mgcda-prepare = mgcda_core.prepare:main",
            "mgcda-replay = mgcda_ros.replay:main",
        ],
    },
)
