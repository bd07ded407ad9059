"""The pure core must import without ROS: every module of cloudypoints_core, with ROS blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter so that ROS modules already imported by other tests do not count.
SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, json, pkgutil, sys

    BLOCKED = ("rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "diagnostic_msgs",
               "rcl_interfaces", "rpyutils", "launch", "launch_ros", "ament_index_python")

    def blocked(name):
        return name.split(".")[0] in BLOCKED or name.startswith("rosidl")

    class BlockRos(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if blocked(fullname):
                raise ImportError(f"ROS module {fullname!r} is blocked in the core")
            return None

    sys.meta_path.insert(0, BlockRos())
    import cloudypoints_core

    imported, skipped, failed = [], {}, {}

    def onerror(name):
        failed[name] = repr(sys.exc_info()[1])

    for info in pkgutil.walk_packages(cloudypoints_core.__path__, "cloudypoints_core.",
                                      onerror=onerror):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # entry points run on import; they are covered by the CLI tests
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except ImportError as exc:
            # An optional heavy dependency that is not installed is fine; ROS, or a missing
            # module of our own, is not.
            missing = getattr(exc, "name", None) or ""
            if "blocked" in str(exc) or missing.startswith("cloudypoints_core"):
                failed[info.name] = repr(exc)
            else:
                skipped[info.name] = repr(exc)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            failed[info.name] = repr(exc)
    ros = sorted(m for m in sys.modules if blocked(m))
    print(json.dumps({"imported": imported, "skipped": skipped, "failed": failed, "ros": ros}))
    """
)


def test_core_imports_without_ros() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ros"] == [], f"ROS modules were imported: {report['ros']}"
    assert report["failed"] == {}, report["failed"]
    if os.environ.get("CLOUDYPOINTS_FULL_ENV") == "1":
        # Every requirement is installed: no module may fail for want of one.
        assert report["skipped"] == {}, report["skipped"]
    for name in ("geometry", "pointcloud", "image", "io", "errors", "types"):
        assert f"cloudypoints_core.{name}" in report["imported"]


def test_light_modules_do_not_import_heavy_libraries() -> None:
    """Geometry, images and clouds load cv2 lazily, so the ROS node starts fast without it."""
    code = (
        "import sys\n"
        "import cloudypoints_core.geometry, cloudypoints_core.pointcloud, "
        "cloudypoints_core.image, cloudypoints_core.io\n"
        "print(sorted(m for m in ('cv2', 'torch', 'onnxruntime', 'matplotlib') "
        "if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
