"""The Fast DDS profile for large images (``config/fastdds_large_images.xml``), applied to the node's participant.

Fast DDS reads the XML file named by ``FASTDDS_DEFAULT_PROFILES_FILE`` when the process creates its first
participant ("XML profiles: loading", https://fast-dds.docs.eprosima.com/en/latest/fastdds/xml_configuration/
making_xml_profiles.html), so :func:`apply_default_profile` must run before ``rclpy.init``. It sets the variable
to the installed profile unless the user already set it (their file wins) or opted out with
``MGCDA_FASTDDS_PROFILE=0`` (also ``false``/``off``/``no``), and only for the Fast DDS rmw (the default one).
Why the profile exists and what it does: docs/ROS.md, "Transport for large images".
"""

from __future__ import annotations

import os
import site
import sysconfig
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "mgcda_ros"
PROFILE_NAME = "fastdds_large_images.xml"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
OPT_OUT_ENV = "MGCDA_FASTDDS_PROFILE"
OPT_OUT_VALUES = ("0", "false", "off", "no")
FASTDDS_RMW = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")  # "" = unset: rmw_fastrtps_cpp is the default


@dataclass(frozen=True)
class ProfileDecision:
    """``profile``: the file Fast DDS will load (None: none from us or the user); ``apply``: whether
    ``FASTDDS_DEFAULT_PROFILES_FILE`` is to be set to it; ``reason``: one line for the log."""

    profile: Path | None
    apply: bool
    reason: str

    @property
    def shipped_active(self) -> bool:
        """True when the participant will run with this package's profile (set here or already set to it)."""
        return self.profile is not None and self.profile.name == PROFILE_NAME


def installed_profile() -> Path | None:
    """The shipped profile: ``share/mgcda_ros/config`` of a colcon install (ament index), of a pip install
    (``data_files`` under the installation's data directory, user scheme included), or ``config/`` of a source
    checkout (editable install). None when none exists."""
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)) / "config" / PROFILE_NAME)
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (no ROS environment sourced)
            pass
    except ImportError:  # pip install without ROS's Python packages
        pass
    for prefix in (sysconfig.get_paths()["data"], site.getuserbase()):
        candidates.append(Path(prefix) / "share" / PACKAGE / "config" / PROFILE_NAME)
    candidates.append(Path(__file__).resolve().parents[1] / "config" / PROFILE_NAME)
    return next((path for path in candidates if path.is_file()), None)


def decide_profile(env: Mapping[str, str], shipped: Path | None) -> ProfileDecision:
    """What to do with ``FASTDDS_DEFAULT_PROFILES_FILE`` given the environment and the shipped profile's path."""
    current = env.get(PROFILE_ENV, "")
    if current:
        same = shipped is not None and Path(current).resolve() == shipped.resolve()
        whose = "the shipped profile" if same else "kept"
        return ProfileDecision(Path(current), False, f"{PROFILE_ENV} is already set ({whose}): {current}")
    if env.get(OPT_OUT_ENV, "").strip().lower() in OPT_OUT_VALUES:
        return ProfileDecision(None, False, f"{OPT_OUT_ENV}={env[OPT_OUT_ENV]}: Fast DDS defaults (no profile)")
    rmw = env.get("RMW_IMPLEMENTATION", "")
    if rmw not in FASTDDS_RMW:
        return ProfileDecision(None, False, f"RMW_IMPLEMENTATION={rmw} is not Fast DDS: no profile")
    if shipped is None:
        return ProfileDecision(None, False, f"{PROFILE_NAME} is not installed: Fast DDS defaults (no profile)")
    return ProfileDecision(shipped, True, f"Fast DDS profile for large images: {shipped}")


def apply_default_profile(env: MutableMapping[str, str] | None = None) -> ProfileDecision:
    """Set ``FASTDDS_DEFAULT_PROFILES_FILE`` in ``env`` (this process's environment by default) when
    :func:`decide_profile` says so; call before ``rclpy.init``. Returns the decision, for the log."""
    target = os.environ if env is None else env
    decision = decide_profile(target, installed_profile())
    if decision.apply and decision.profile is not None:
        target[PROFILE_ENV] = str(decision.profile)
    return decision


def profile_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a launch file adds to the node's environment: the same decision as the executable's."""
    decision = decide_profile(os.environ if env is None else env, installed_profile())
    return {PROFILE_ENV: str(decision.profile)} if decision.apply and decision.profile is not None else {}
