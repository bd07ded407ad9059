"""depth.launch.py and the RViz config without a ROS install: the launch APIs used, the mapping of
launch arguments to parameters and remappings (launch replaced by recording stand-ins), and the
displays of config/cloudypoints.rviz. test_launch.py launches it for real where it can."""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from typing import Any

import pytest
import yaml
from conftest import REPO

LAUNCH_FILE = REPO / "launch" / "depth.launch.py"
RVIZ_FILE = REPO / "config" / "cloudypoints.rviz"

#: The launch APIs the file may use: stable since Foxy, unchanged on Humble, Jazzy and Kilted.
STABLE_IMPORTS = {
    "launch": {"LaunchDescription"},
    "launch.actions": {"DeclareLaunchArgument", "OpaqueFunction"},
    "launch.conditions": {"IfCondition"},
    "launch.substitutions": {"LaunchConfiguration"},
    "launch_ros.actions": {"Node"},
    "ament_index_python.packages": {"get_package_share_directory"},
}


def test_launch_file_uses_only_long_stable_launch_apis() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            assert node.module in STABLE_IMPORTS, node.module
            assert {a.name for a in node.names} <= STABLE_IMPORTS[node.module], node.module
        elif isinstance(node, ast.Import):
            assert all(a.name in ("os",) for a in node.names)


# ------------------------------------------------------------------ without a ROS install
class _Recorder:
    """Stands in for a launch class and keeps its constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _Config(_Recorder):
    def perform(self, context: dict[str, str]) -> str:
        return context[self.args[0]]


def _load_with_stand_ins(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The launch file with launch/launch_ros/ament_index replaced by recording stand-ins."""
    names = {
        "launch": {"LaunchDescription": _Recorder},
        "launch.actions": {"DeclareLaunchArgument": _Recorder, "OpaqueFunction": _Recorder},
        "launch.conditions": {"IfCondition": _Recorder},
        "launch.substitutions": {"LaunchConfiguration": _Config},
        "launch_ros": {},
        "launch_ros.actions": {"Node": _Recorder},
        "ament_index_python": {},
        "ament_index_python.packages": {
            "get_package_share_directory": lambda pkg: f"/opt/share/{pkg}"
        },
    }
    for name, attrs in names.items():
        module = types.ModuleType(name)
        for attr, value in attrs.items():
            setattr(module, attr, value)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("depth_launch_under_test", LAUNCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluate(module: types.ModuleType, **args: str) -> tuple[dict[str, str], list[_Recorder]]:
    description = module.generate_launch_description()
    declared = {
        a.args[0]: a.kwargs["default_value"]
        for a in description.args[0]
        if isinstance(a, _Recorder) and "default_value" in a.kwargs
    }
    (opaque,) = [a for a in description.args[0] if "function" in a.kwargs]
    context = {**declared, **args}
    return declared, opaque.kwargs["function"](context)


def test_launch_arguments_map_to_parameters_and_remappings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _load_with_stand_ins(monkeypatch)
    declared, (rviz, node) = _evaluate(module)
    assert set(declared) == {
        "model",
        "backend",
        "device",
        "image_topic",
        "camera_info_topic",
        "namespace",
        "params_file",
        "reliable_input",
        "camera_height_m",
        "camera_pitch_rad",
        "scale_method",
        "ground_frame",
        "dds_profile",
        "use_rviz",
    }
    assert declared["params_file"] == "/opt/share/cloudypoints_ros/config/depth.yaml"
    assert node.kwargs["package"] == "cloudypoints_ros"
    assert node.kwargs["executable"] == "depth_node"
    assert node.kwargs["name"] == "cloudypoints_depth"
    # Empty arguments leave the params file alone.
    assert node.kwargs["parameters"] == [declared["params_file"]]
    assert dict(node.kwargs["remappings"]) == {
        "image": "/camera/image",
        "image/compressed": "/camera/image/compressed",
        "camera_info": "/camera/camera_info",
    }
    assert rviz.kwargs["arguments"] == [
        "-d",
        "/opt/share/cloudypoints_ros/config/cloudypoints.rviz",
    ]
    assert rviz.kwargs["condition"].args == ("false",)
    # The node (and only the node) gets the shipped Fast DDS profile for large messages.
    assert declared["dds_profile"] == "/opt/share/cloudypoints_ros/config/fastdds_shm_large.xml"
    assert node.kwargs["additional_env"] == {
        "FASTDDS_DEFAULT_PROFILES_FILE": declared["dds_profile"]
    }
    assert "additional_env" not in rviz.kwargs

    _, (rviz, node) = _evaluate(
        module,
        model="/models/m",
        backend="tensorrt",
        image_topic="/cam/raw/",
        namespace="/car1",
        use_rviz="true",
    )
    assert node.kwargs["parameters"][1] == {"model_path": "/models/m", "backend": "tensorrt"}
    assert node.kwargs["namespace"] == "/car1" == rviz.kwargs["namespace"]
    assert dict(node.kwargs["remappings"])["image/compressed"] == "/cam/raw/compressed"
    assert dict(rviz.kwargs["remappings"]) == {"image": "/cam/raw/"}
    assert rviz.kwargs["condition"].args == ("true",)

    _, (_, node) = _evaluate(module, dds_profile="/etc/my_fastdds.xml")
    assert node.kwargs["additional_env"] == {
        "FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_fastdds.xml"
    }
    _, (_, node) = _evaluate(module, dds_profile="")  # empty: the user's environment decides
    assert node.kwargs["additional_env"] is None

    _, (_, node) = _evaluate(module, reliable_input="True")
    assert node.kwargs["parameters"][1] == {"reliable_input": True}
    with pytest.raises(ValueError, match="reliable_input"):
        _evaluate(module, reliable_input="yes")

    _, (_, node) = _evaluate(
        module, camera_height_m="1.22", camera_pitch_rad="0.038", scale_method="ground_plane"
    )
    assert node.kwargs["parameters"][1] == {
        "scale.camera_height_m": 1.22,
        "scale.camera_pitch_rad": 0.038,
        "scale.method": "ground_plane",
    }
    _, (_, node) = _evaluate(module, ground_frame="base_footprint")
    assert node.kwargs["parameters"][1] == {"scale.ground_frame": "base_footprint"}
    with pytest.raises(ValueError, match="camera_height_m"):
        _evaluate(module, camera_height_m="tall")


def test_shipped_dds_profile_is_installed_and_bounds_the_shared_memory_queue() -> None:
    import xml.etree.ElementTree as ET

    setup = (REPO / "setup.py").read_text()
    assert 'glob("config/*.xml")' in setup  # the launch file's default path exists when installed
    ns = {"dds": "http://www.eprosima.com"}
    root = ET.parse(REPO / "config" / "fastdds_shm_large.xml").getroot()
    (shm,) = root.findall(".//dds:transport_descriptor", ns)
    assert shm.findtext("dds:type", namespaces=ns) == "SHM"
    segment = int(shm.findtext("dds:segment_size", namespaces=ns) or 0)
    largest = int(shm.findtext("dds:maxMessageSize", namespaces=ns) or 0)
    queue = int(shm.findtext("dds:port_queue_capacity", namespaces=ns) or 512)
    assert 0 < largest <= segment
    # A bounded port queue: Fast DDS's default of 512 held dozens of stale images.
    assert queue <= 64
    participant = root.find(".//dds:participant", ns)
    assert participant is not None and participant.get("is_default_profile") == "true"
    assert participant.findtext(".//dds:useBuiltinTransports", namespaces=ns) == "true"


def test_rviz_config_shows_images_and_the_rgb_cloud_in_the_demo_frame() -> None:
    config = yaml.safe_load(RVIZ_FILE.read_text())
    manager = config["Visualization Manager"]
    from cloudypoints_ros import DEMO_FRAME_ID

    assert manager["Global Options"]["Fixed Frame"] == DEMO_FRAME_ID
    displays = {d["Name"]: d for d in manager["Displays"]}
    topics = {d["Class"]: [] for d in displays.values()}
    for d in displays.values():
        if "Topic" in d:
            topics[d["Class"]].append(d["Topic"]["Value"])
    assert {"image", "depth/image"} <= set(topics["rviz_default_plugins/Image"])
    (cloud,) = [d for d in displays.values() if d["Class"] == "rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "points" and cloud["Color Transformer"] == "RGB8"
    # The node publishes reliably: a reliable RViz subscription sees it.
    assert cloud["Topic"]["Reliability Policy"] == "Reliable"
