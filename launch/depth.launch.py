"""Launch the CloudyPoints depth node (and optionally RViz2) on a camera's image and CameraInfo.

    ros2 launch cloudypoints_ros depth.launch.py image_topic:=/camera/image_raw \
        camera_info_topic:=/camera/camera_info use_rviz:=true

Arguments: ``model`` (model package path; empty keeps the params file's value, whose default is
the bundled model), ``backend`` and ``device`` (empty keeps the params file's value),
``image_topic``, ``camera_info_topic``, ``namespace``, ``params_file`` (default: the package's
config/depth.yaml), ``reliable_input``, ``dds_profile`` and ``use_rviz``; for relative models
``camera_height_m``, ``camera_pitch_rad``, ``scale_method`` and ``ground_frame`` set the
``scale.*`` parameters (empty keeps the params file's value). With ``input_transport:
compressed`` in the params file the node reads ``<image_topic>/compressed``.

``dds_profile`` (default: the package's config/fastdds_shm_large.xml) becomes the node's
``FASTDDS_DEFAULT_PROFILES_FILE``: megabyte images and clouds cross the shared memory in one
piece instead of 64 KiB fragments (see that file). It applies to the node's process only, so
RViz and the rest of the system keep their own settings; empty keeps whatever the environment
sets. Other DDS implementations ignore the variable.

Only launch APIs that have been stable since ROS 2 Foxy are used (DeclareLaunchArgument,
LaunchConfiguration, OpaqueFunction, IfCondition, launch_ros.actions.Node), so the file runs
unchanged on Humble, Jazzy and Kilted.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "cloudypoints_ros"


def _depth_node(context, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - launch's signature
    # Evaluated at launch time so that empty arguments leave the params file's values alone
    # (a parameter set to "" would override them).
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {
        param: arg(name)
        for name, param in (("model", "model_path"), ("backend", "backend"), ("device", "device"))
        if arg(name)
    }
    reliable = arg("reliable_input").strip().lower()
    if reliable in ("true", "false"):
        overrides["reliable_input"] = reliable == "true"
    elif reliable:
        raise ValueError(f"reliable_input must be true, false or empty, got {reliable!r}")
    for name in ("camera_height_m", "camera_pitch_rad"):
        text = arg(name).strip()
        if text:
            try:
                overrides[f"scale.{name}"] = float(text)
            except ValueError:
                raise ValueError(f"{name} must be a number or empty, got {text!r}") from None
    for name, param in (("scale_method", "scale.method"), ("ground_frame", "scale.ground_frame")):
        if arg(name):
            overrides[param] = arg(name)
    parameters: list = [arg("params_file")]
    if overrides:
        parameters.append(overrides)
    image_topic = arg("image_topic")
    profile = arg("dds_profile")
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else None
    depth = Node(
        package=PACKAGE,
        executable="depth_node",
        name="cloudypoints_depth",
        namespace=arg("namespace"),
        parameters=parameters,
        remappings=[
            ("image", image_topic),
            ("image/compressed", image_topic.rstrip("/") + "/compressed"),
            ("camera_info", arg("camera_info_topic")),
        ],
        additional_env=env,
        output="screen",
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="cloudypoints_rviz",
        namespace=arg("namespace"),
        arguments=[
            "-d",
            os.path.join(get_package_share_directory(PACKAGE), "config", "cloudypoints.rviz"),
        ],
        # The RViz config names its topics relative to the namespace; "image" is the camera.
        remappings=[("image", image_topic)],
        condition=IfCondition(arg("use_rviz")),
        output="screen",
    )
    # RViz first: if rviz2 is not installed, launch fails before starting the depth node
    # (a failure after it would leave the node running without its launch process).
    return [rviz, depth]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    default_params = os.path.join(share, "config", "depth.yaml")
    default_profile = os.path.join(share, "config", "fastdds_shm_large.xml")
    arguments = [
        DeclareLaunchArgument(
            "model",
            default_value="",
            description="Model package folder or .onnx file; empty: the "
            "params file's model_path (default: the bundled model)",
        ),
        DeclareLaunchArgument(
            "backend",
            default_value="",
            description="auto, tensorrt, onnxruntime or torch; empty: the params file's value",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="",
            description="cpu, cuda or cuda:N; empty: the params file's value",
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="/camera/image",
            description="Camera image topic (sensor_msgs/Image)",
        ),
        DeclareLaunchArgument(
            "camera_info_topic",
            default_value="/camera/camera_info",
            description="CameraInfo topic of that camera",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace of the node (and its output topics)",
        ),
        DeclareLaunchArgument(
            "params_file", default_value=default_params, description="Parameters file of the node"
        ),
        DeclareLaunchArgument(
            "reliable_input",
            default_value="",
            description="true: reliable input subscriptions (large images over a busy network "
            "are lost less); false: sensor-data QoS; empty: the params file's value",
        ),
        DeclareLaunchArgument(
            "camera_height_m",
            default_value="",
            description="Relative models: camera height above the road (m) for the metric scale "
            "(scale.camera_height_m); empty: the params file's value",
        ),
        DeclareLaunchArgument(
            "camera_pitch_rad",
            default_value="",
            description="Relative models: camera pitch (rad, positive looks down); empty: the "
            "params file's value",
        ),
        DeclareLaunchArgument(
            "scale_method",
            default_value="",
            description="auto, ground_plane, fixed or none (scale.method); empty: the params "
            "file's value",
        ),
        DeclareLaunchArgument(
            "ground_frame",
            default_value="",
            description="TF frame on the road (e.g. base_footprint) to read the camera height "
            "and pitch from (needs tf2_ros); empty: the params file's value",
        ),
        DeclareLaunchArgument(
            "dds_profile",
            default_value=default_profile,
            description="Fast DDS XML profile of the node (FASTDDS_DEFAULT_PROFILES_FILE): "
            "large images and clouds in one shared-memory piece; empty: keep the environment's",
        ),
        DeclareLaunchArgument(
            "use_rviz",
            default_value="false",
            description="Start RViz2 with config/cloudypoints.rviz",
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_depth_node)])
