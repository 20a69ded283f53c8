"""Process environment for earl_ros tools: DDS confined to this machine by default, the shipped
shared-memory Fast DDS profile, and the location of the shipped config files.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "earl_ros"
DISCOVERY_VAR = "ROS_AUTOMATIC_DISCOVERY_RANGE"
PROFILE_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"


def share_file(*parts: str) -> Path:
    """A file shipped in share/earl_ros (config/earl.yaml, config/fastdds_shm.xml, launch/...).

    Looks in the source checkout (editable installs), then <prefix>/share/earl_ros (pip or colcon
    installs), then the ament index.
    """
    candidates = [Path(__file__).resolve().parents[2].joinpath(*parts),
                  Path(sys.prefix, "share", PACKAGE).joinpath(*parts)]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)).joinpath(*parts))
    except Exception:  # noqa: BLE001 - ament index not set up: fine, other candidates remain
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{'/'.join(parts)} not found (looked in: {', '.join(map(str, candidates))})")


def safe_env(env: dict | None = None, shm: bool = True, quiet: bool = False) -> dict:
    """Returns (and, for env=None, applies to os.environ) the defaults every earl tool runs with.

    - ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST unless the caller set it explicitly;
    - FASTDDS_DEFAULT_PROFILES_FILE = the shipped SHM profile if shm and the caller set none;
    - AMENT_PREFIX_PATH includes this interpreter's prefix (pip installs are the ROS prefix).
    """
    target = os.environ if env is None else env
    if not target.get(DISCOVERY_VAR):
        target[DISCOVERY_VAR] = "LOCALHOST"
    elif target[DISCOVERY_VAR] != "LOCALHOST" and not quiet:
        print(f"[earl] note: {DISCOVERY_VAR}={target[DISCOVERY_VAR]} from the environment "
              "(DDS discovery may leave this machine)", file=sys.stderr)
    if shm and not target.get(PROFILE_VAR):
        try:
            target[PROFILE_VAR] = str(share_file("config", "fastdds_shm.xml"))
        except FileNotFoundError as e:
            if not quiet:
                print(f"[earl] warning: shared-memory profile not found ({e}); using Fast DDS defaults",
                      file=sys.stderr)
    prefix = sys.prefix
    ament = target.get("AMENT_PREFIX_PATH", "")
    if prefix not in ament.split(os.pathsep):
        target["AMENT_PREFIX_PATH"] = os.pathsep.join([p for p in (prefix, ament) if p])
    return target


def shm_message_limit(env: dict | None = None) -> int | None:
    """The largest message (bytes) the Fast DDS profile in use carries in one shared-memory send.

    None when no profile file is set or it configures no SHM transport (Fast DDS defaults, where
    large frames fragment over UDP). A frame larger than this is not delivered on its first send,
    so the tools refuse it instead of sending it into the void.
    """
    path = (os.environ if env is None else env).get(PROFILE_VAR)
    if not path or not Path(path).is_file():
        return None
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    limits = []
    for desc in root.iter():
        if not desc.tag.endswith("transport_descriptor"):
            continue
        fields = {child.tag.split("}")[-1]: (child.text or "").strip() for child in desc}
        if fields.get("type") != "SHM":
            continue
        for key in ("maxMessageSize", "segment_size"):
            if fields.get(key, "").isdigit():
                limits.append(int(fields[key]))
    return min(limits) if limits else None
