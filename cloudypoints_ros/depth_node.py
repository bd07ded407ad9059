"""The ``cloudypoints_depth`` node: camera images in, metric depth, CameraInfo and clouds out.

Data flow: a free inference worker takes the newest image from the subscription itself (the
executor never touches it) -> message -> numpy (``conversions``) -> ``DepthEstimator.predict`` ->
the same worker builds the depth image, CameraInfo, PointCloud2 (back-projected straight into the
serialized message's bytes) and an optional colour map -> in-order hand-over (newest wins) -> the
same worker sends every frame now next in order, through rcl with the GIL released
(``rcl_direct``); where the middleware does not take serialized bytes, a publish thread builds
message objects into buffers reused from frame to frame and sends them. The executor only serves
parameters, timers and diagnostics (the workers take the CameraInfo they need), so it stays
responsive while the network runs. Newest wins at every stage (the DDS reader keeps the last two
images and a worker takes only the newest, the hand-over keeps one finished frame), so under
overload a frame waits behind at most one older frame per stage, never a queue; an image superseded
in the reader is never taken nor deserialised; and frame k is sent while later frames are inferred.
On a CPU two workers, each with its own copy of the model on one thread, infer two frames at once:
about a quarter more frames/s than one model on two threads (no synchronisation between the cores
inside every layer, and nothing to stall when the DDS and publishing threads take a core for a
moment), at the price of a longer latency per frame (``inference_workers: 1`` for the shortest).
Outputs keep the order of the inputs. When the workers only compete for the cores (two at once make
each frame much slower, e.g. under a flood of images), :class:`_WorkerGate` lets one of them run.

Topics (relative, so namespaces and remappings apply): ``image`` (or ``image/compressed`` with
``input_transport: compressed``), ``camera_info`` in; ``depth/image``, ``depth/camera_info``,
``points``, ``depth/colormap`` out; ``/diagnostics``. Parameters are listed in :data:`PARAMETERS`
and documented in ``config/depth.yaml``. Model, backend, device and the input set-up are read at
start-up only: a model is megabytes of weights and maybe a TensorRT engine build, and swapping it
under a running pipeline would stall or mix frames, so changing them at run time is refused with
the reason; restart the node (``ros2 launch cloudypoints_ros depth.launch.py model:=...``).

Relative models (``relative_inverse_depth``, ``affine_inverse_depth``, ``disparity``) are
published in metres only through a stated source (``scale.*`` parameters): the road under a
camera of known height and pitch (from the parameters, or from TF with ``scale.ground_frame``
where ``tf2_ros`` is installed), fitted per frame and smoothed over frames by one shared
:class:`~cloudypoints_core.inference.scale_tracker.ScaleTracker` (a failed fit reuses the last
good one), or a fixed scale. A relative model without any is refused at start-up, naming the
parameter to set; scale, shift, inlier ratio and method are reported in ``/diagnostics``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import rclpy
import rclpy.exceptions
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)

try:
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble: the same classes in their former module
    from rclpy.qos_event import (
        PublisherEventCallbacks,
        SubscriptionEventCallbacks,
    )
from rclpy.callback_groups import CallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from rclpy.serialization import deserialize_message

from cloudypoints_core.errors import CloudyPointsError, ConfigError, InputError, ScaleError
from cloudypoints_core.geometry import Intrinsics, resize_image
from cloudypoints_core.image import colorize_depth
from cloudypoints_core.inference.scale import ScaleFit, mounting_from_transform
from cloudypoints_core.inference.scale_tracker import ScaleTracker
from cloudypoints_core.pointcloud import XYZ_FIELDS, XYZRGB_FIELDS, backproject_packed
from cloudypoints_ros import NODE_NAME
from cloudypoints_ros import conversions as conv
from cloudypoints_ros.conversions import CameraInfo, CompressedImage, Image, PointCloud2
from cloudypoints_ros.mailbox import StampCache
from cloudypoints_ros.qos import CAMERA_INFO_QUEUE_DEPTH, input_qos, output_qos
from cloudypoints_ros.rcl_direct import SerializedTaker, direct_publisher, serialized_taker
from cloudypoints_ros.stats import NodeStats, ReasonThrottle, StatsSnapshot

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
OUTPUT_RESOLUTIONS = ("input", "model")
INPUT_TRANSPORTS = ("raw", "compressed")
SCALE_METHODS = ("auto", "ground_plane", "fixed", "none")
#: A stamp further than this from the node's clock is from another clock (e.g. a bag played
#: without re-stamping): its latency is not a latency and is left out of the percentiles.
_PLAUSIBLE_LATENCY_S = 3600.0
#: Seconds between two reports of the same problem in the log.
_LOG_THROTTLE_S = 5.0
#: The image topic has publishers but no image arrived for this long: say why that may be.
NO_IMAGES_WARN_S = 3.0
#: Seconds between two log lines about images that do not arrive (also in /diagnostics).
_INPUT_LOG_THROTTLE_S = 30.0
#: Where the launch file's default Fast DDS profile lives in the package (and in the source tree).
DDS_PROFILE_HINT = "share/cloudypoints_ros/config/fastdds_shm_large.xml"


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description, and the range or choices that validate it."""

    name: str
    default: Any
    description: str
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    #: Read once at start-up; a change at run time is refused (see the module docstring).
    startup_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        desc = ParameterDescriptor(description=self.description)
        if self.int_range is not None:
            desc.integer_range = [
                IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)
            ]
        if self.float_range is not None:
            desc.floating_point_range = [
                FloatingPointRange(
                    from_value=self.float_range[0], to_value=self.float_range[1], step=0.0
                )
            ]
        notes = []
        if self.choices is not None:
            notes.append("one of: " + ", ".join(self.choices))
        if self.startup_only:
            notes.append("read at start-up only; restart the node to change it")
        desc.additional_constraints = "; ".join(notes)
        return desc


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model_path",
        "",
        "Model package folder, its spec.yaml or an .onnx file with the "
        "spec in its metadata; empty = the bundled default model",
        startup_only=True,
    ),
    ParamSpec(
        "backend",
        "auto",
        "Inference backend; auto picks TensorRT on a CUDA device when "
        "installed, else ONNX Runtime, else PyTorch",
        choices=BACKENDS,
        startup_only=True,
    ),
    ParamSpec(
        "device",
        "cpu",
        "Device: cpu, cuda or cuda:N (auto falls back to cpu with a warning when CUDA is absent)",
        startup_only=True,
    ),
    ParamSpec(
        "num_threads",
        0,
        "CPU threads of the backend (0 = the library's default)",
        int_range=(0, 256),
        startup_only=True,
    ),
    ParamSpec(
        "inference_workers",
        0,
        "Frames inferred at once, each by its own copy of the model: more frames/s on a CPU, a "
        "longer latency per frame; 0 = auto (2 on a CPU with ONNX Runtime and 2+ cores, "
        "each with num_threads = cores / 2 unless set; else 1)",
        int_range=(0, 16),
        startup_only=True,
    ),
    ParamSpec(
        "output_resolution",
        "input",
        "Depth image size: 'input' (the camera image's) or "
        "'model' (the network's, cheaper to publish)",
        choices=OUTPUT_RESOLUTIONS,
    ),
    ParamSpec(
        "input_transport",
        "raw",
        "'raw' subscribes to sensor_msgs/Image on 'image', "
        "'compressed' to sensor_msgs/CompressedImage on 'image/compressed'",
        choices=INPUT_TRANSPORTS,
        startup_only=True,
    ),
    ParamSpec(
        "reliable_input",
        False,
        "Subscribe with reliable QoS instead of the sensor-data profile (best effort, keep last)",
        startup_only=True,
    ),
    ParamSpec(
        "match_input_reliability",
        True,
        "With reliable_input false: subscribe to images reliably while every publisher of the "
        "image topic is reliable (re-checked each second), else best effort; large images from "
        "a reliable camera are then resent instead of lost",
        startup_only=True,
    ),
    ParamSpec(
        "camera_info_wait_s",
        0.05,
        "How long the worker waits for the CameraInfo with "
        "the image's stamp before using the latest one",
        float_range=(0.0, 1.0),
    ),
    ParamSpec(
        "cloud.stride",
        1,
        "Keep every stride-th row and column in the point cloud",
        int_range=(1, 64),
    ),
    ParamSpec(
        "cloud.min_range_m",
        0.0,
        "Drop points nearer than this depth (z, metres)",
        float_range=(0.0, 10000.0),
    ),
    ParamSpec(
        "cloud.max_range_m",
        80.0,
        "Drop points farther than this depth (z, metres)",
        float_range=(0.0, 10000.0),
    ),
    ParamSpec("cloud.color", True, "Add the packed 'rgb' field from the camera image"),
    ParamSpec(
        "cloud.organized",
        False,
        "Organised cloud (height x width of the strided image, "
        "NaN points where invalid) instead of valid points only",
    ),
    ParamSpec("publish_colormap", True, "Publish depth/colormap (rgb8) for quick viewing"),
    ParamSpec(
        "fallback.fx",
        0.0,
        "Focal length x (px at the image's resolution) used when no "
        "CameraInfo arrives within fallback.timeout_s; 0 disables the fallback",
        float_range=(0.0, 1.0e6),
    ),
    ParamSpec(
        "fallback.fy",
        0.0,
        "Focal length y (px); 0 = same as fallback.fx",
        float_range=(0.0, 1.0e6),
    ),
    ParamSpec(
        "fallback.cx",
        -1.0,
        "Principal point x (px); -1 = the image centre (W - 1) / 2",
        float_range=(-1.0, 1.0e6),
    ),
    ParamSpec(
        "fallback.cy",
        -1.0,
        "Principal point y (px); -1 = the image centre (H - 1) / 2",
        float_range=(-1.0, 1.0e6),
    ),
    ParamSpec(
        "fallback.timeout_s",
        2.0,
        "Seconds after start-up without any CameraInfo before the fallback intrinsics are used",
        float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "scale.method",
        "auto",
        "Metric scale of relative models (metric models ignore it): ground_plane fits scale and "
        "shift on the road from the camera height and pitch; fixed uses scale.fixed; auto: the "
        "ground when a height is known (parameter or TF), else scale.fixed; none is refused for "
        "a relative model (its depth is not metres)",
        choices=SCALE_METHODS,
        startup_only=True,
    ),
    ParamSpec(
        "scale.camera_height_m",
        0.0,
        "Height of the camera centre above the road (m) for the ground fit; 0 = not set",
        float_range=(0.0, 100.0),
    ),
    ParamSpec(
        "scale.camera_pitch_rad",
        0.0,
        "Pitch of the camera (rad, positive looks down, as Cityscapes' camera.json)",
        float_range=(-1.5, 1.5),
    ),
    ParamSpec(
        "scale.fixed",
        0.0,
        "Fixed scale of a relative model: depth = scale.fixed / (output + scale.fixed_shift); "
        "0 = not set",
        float_range=(0.0, 1.0e9),
        startup_only=True,
    ),
    ParamSpec(
        "scale.fixed_shift",
        0.0,
        "Shift (in the model's output units) used with scale.fixed for affine models",
        float_range=(-1.0e9, 1.0e9),
        startup_only=True,
    ),
    ParamSpec(
        "scale.ground_frame",
        "",
        "TF frame on the road under the camera (e.g. base_footprint): camera height and pitch "
        "are read from TF per frame instead of the parameters, which (if set) remain the "
        "fallback when the lookup fails (needs tf2_ros); empty = off",
        startup_only=True,
    ),
    ParamSpec(
        "stats_period_s",
        5.0,
        "Seconds between health reports (log and /diagnostics)",
        float_range=(0.1, 3600.0),
        startup_only=True,
    ),
)
_SPECS = {p.name: p for p in PARAMETERS}


@dataclass(frozen=True)
class FrameOptions:
    """The run-time options one frame is processed with (a consistent snapshot)."""

    output_resolution: str
    camera_info_wait_s: float
    stride: int
    min_range_m: float
    max_range_m: float
    color: bool
    organized: bool
    publish_colormap: bool
    fallback: tuple[float, float, float, float]
    fallback_timeout_s: float
    camera_height_m: float = 0.0
    camera_pitch_rad: float = 0.0


@dataclass(frozen=True)
class _Job:
    msg: bytes | CompressedImage  # a serialized Image (raw subscription) or a CompressedImage
    received_s: float  # time.monotonic() when a worker took it
    seq: int  # order of arrival; outputs are published in this order


@dataclass(frozen=True)
class _WorkerIO:
    """An inference worker's own means of taking messages: a wait set and (where rcl can be
    called directly) a taker with its reusable buffer."""

    wait_set: Any
    taker: SerializedTaker | None


T = TypeVar("T")

#: Seconds a worker waits for an image before it checks again whether the node is closing.
_PULL_WAIT_S = 0.2
#: Longest single wait for a CameraInfo (the whole wait is camera_info_wait_s).
_INFO_SLICE_S = 0.002
#: rmw's value for a sequence number the middleware does not provide.
_SEQUENCE_UNSUPPORTED = 2**64 - 1


class _PulledByWorkers(CallbackGroup):
    """The image subscription's group: the executor never waits on it nor takes its messages.

    The inference workers take images themselves (``DepthNode._pull``), and only when one of
    them is free, so the images that newest-wins would drop stay in the DDS reader's keep-last
    queue and are never taken or deserialised. Taken by the executor, each of them cost 1-2 ms
    of Python (wake-up, take, hand-over) on the cores inference needs, under overload most of
    the node's own CPU."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        pass


class _InOrder(Generic[T]):
    """Finished frames from the inference workers to publishing (the worker that finished the
    oldest running frame, or the publish thread): in order of arrival, newest wins.

    A worker calls ``start(seq)`` when it takes a frame and ``finish(seq, item)`` when done
    (``item`` None if the frame was rejected). ``get`` returns the oldest finished item once no
    older frame is still being worked on, so a fast worker never overtakes a slow one. A frame
    that finishes when no older one is still running supersedes the finished frames still
    waiting (``finish`` returns how many it dropped): when publishing is the slower stage, the
    frame it takes next is the newest, never a backlog. Finished frames wait together only
    while an older frame is still being inferred (at most one per worker), and none is lost to
    a worker that merely finished first. Workers call ``wait_for_room`` before taking a new
    frame and pause while a finished item waits (inferring frames that would only supersede
    each other takes the cores the publish stage needs). ``finish`` itself never waits, so a
    worker holding the oldest frame can always hand it over.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done: list[tuple[int, T]] = []  # a heap by seq
        self._running: set[int] = set()
        self._closed = False

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Wait until no finished item waits; False on timeout or close."""
        with self._cond:
            room = self._cond.wait_for(lambda: self._closed or not self._done, timeout)
            return bool(room) and not self._closed

    def start(self, seq: int) -> None:
        with self._cond:
            self._running.add(seq)

    def finish(self, seq: int, item: T | None) -> int:
        """Hand over the result of frame ``seq``; returns the number of waiting finished frames
        it superseded (dropped)."""
        dropped = 0
        with self._cond:
            self._running.discard(seq)
            if item is not None and not self._closed:
                if not self._running or seq < min(self._running):
                    dropped = sum(1 for s, _ in self._done if s < seq)
                    self._done = [(s, i) for s, i in self._done if s > seq]
                    heapq.heapify(self._done)
                heapq.heappush(self._done, (seq, item))
            self._cond.notify_all()
        return dropped

    def _ready(self) -> bool:
        return bool(self._done) and (not self._running or self._done[0][0] < min(self._running))

    def get(self, timeout: float | None = None) -> T | None:
        """The next item in order; None on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._ready(), timeout)
            if self._closed or not self._ready():
                return None
            item = heapq.heappop(self._done)[1]
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._done.clear()
            self._cond.notify_all()


class _WorkerGate:
    """Lets the extra inference workers take frames only while running side by side pays.

    Two workers on two cores each infer at nearly their solo speed and together deliver almost
    twice the frames. When the cores are taken (the DDS and publish threads under a flood of
    images, other processes), they only compete: each frame takes up to twice as long and
    latency doubles for little or no gain in frames/s. The gate keeps moving averages of the
    inference time of frames run alone and of frames run beside another; while the shared time
    exceeds ``max_slowdown`` x the solo time (two workers then deliver less than 2 /
    max_slowdown x the frames of one), only worker 0 takes frames, and every ``probe_s`` the
    others try again to see whether the cores are free.
    """

    def __init__(self, max_slowdown: float = 1.6, probe_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._starts = 0
        self._solo_s: float | None = None
        self._shared_s: float | None = None
        self._max_slowdown = max_slowdown
        self._probe_s = probe_s
        self._next_probe = 0.0

    def may_start(self, worker: int) -> bool:
        """Whether ``worker`` may take a frame now (worker 0 always may)."""
        if worker == 0:
            return True
        with self._lock:
            if self._solo_s is None or self._shared_s is None:
                return True  # still learning both
            if self._shared_s <= self._max_slowdown * self._solo_s:
                return True
            now = time.monotonic()
            if now >= self._next_probe:
                self._next_probe = now + self._probe_s
                return True
            return False

    def begin(self) -> tuple[int, bool]:
        """A worker starts a frame; the token to hand to :meth:`end`."""
        with self._lock:
            self._running += 1
            self._starts += 1
            return self._starts, self._running > 1

    def end(self, seconds: float, token: tuple[int, bool]) -> None:
        """The frame of ``token`` took ``seconds``. It ran beside another one if another worker
        was running when it started or ended, or started meanwhile."""
        with self._lock:
            started, shared = token
            shared = shared or self._running > 1 or self._starts > started
            self._running -= 1
            old = self._shared_s if shared else self._solo_s
            new = seconds if old is None else 0.8 * old + 0.2 * seconds
            if shared:
                self._shared_s = new
            else:
                self._solo_s = new

    @property
    def slowdown(self) -> float:
        """Shared over solo inference time (NaN until both are known)."""
        with self._lock:
            if self._solo_s is None or self._shared_s is None or self._solo_s <= 0:
                return math.nan
            return self._shared_s / self._solo_s


@dataclass(frozen=True)
class _Inferred:
    """A frame between the two worker stages: inference done, messages not yet published."""

    job: _Job
    header: conv.HeaderLike  # of the input image
    rgb: Any  # (H, W, 3) uint8, the decoded input
    intrinsics: Intrinsics  # of the input image
    result: Any  # DepthResult
    opts: FrameOptions
    stamp_ns: int
    outgoing: _Outgoing | None = None  # built by the worker (serialized publishing)


@dataclass(frozen=True)
class _Outgoing:
    """One frame's messages, ready for ``publish``: message objects or serialized bytes (None:
    nobody listens to that output)."""

    depth: Any
    info: Any
    cloud: Any | None
    colormap: Any | None


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota
    (a container given 2 CPUs on a 64-core host). Two inference workers on one usable core
    would only compete for it: each frame would take twice as long, with no gain in frames/s.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 quota
        pass
    return max(1, cores)


class _Rejected(Exception):
    """A frame the node drops, with the reason it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


#: Logged once at start-up when the node runs the bundled model.
BUNDLED_MODEL_NOTE = (
    "the bundled model is trained on synthetic streets (SynthCity) only: on real cameras its "
    "depth is little better than a guess (metric AbsRel about 0.5 on KITTI, nuScenes and DDAD "
    "frames). For a real camera import a published network (Depth Anything, Metric3D, MiDaS): "
    "see the README section 'Use a model that works on your camera'"
)


def _take(sub: Any, taker: SerializedTaker | None) -> tuple[Any, dict[str, Any]] | None:
    """The next message of a subscription the workers take themselves, with its info: through
    rcl with the GIL released (``taker``) when serialized, else through rclpy."""
    if taker is not None and sub.raw:
        return taker.take(sub)
    taken: tuple[Any, dict[str, Any]] | None = sub.handle.take_message(sub.msg_type, sub.raw)
    return taken


def _never_called(msg: Any) -> None:
    """The image subscription's callback; the executor never runs it (_PulledByWorkers)."""


def _is_bundled_model(path: str | None) -> bool:
    """Whether ``path`` (the model_path parameter) names the bundled default package."""
    from cloudypoints_core.inference.package import default_model_path

    if path in (None, "", "default"):
        return True
    target = Path(path).resolve()
    if target.is_file():
        target = target.parent
    return target == default_model_path().resolve()


class DepthNode(Node):
    """The depth node (see the module docstring).

    ``estimator`` replaces the model named by the parameters (tests wrap one to slow it down);
    other keyword arguments go to :class:`rclpy.node.Node` (``namespace``, ``context``,
    ``parameter_overrides``, ...). Raises ConfigError/ModelError/BackendError (after cleaning up)
    when the parameters or the model are unusable.
    """

    def __init__(self, *, estimator: Any | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._workers: list[threading.Thread] = []
        self._estimator: Any | None = None
        self._estimators: list[Any] = []
        try:
            self._setup(estimator)
        except BaseException:
            self.destroy_node()
            raise

    # ------------------------------------------------------------------------------ set-up
    def _setup(self, estimator: Any | None) -> None:
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        startup = {p.name: self.get_parameter(p.name).value for p in PARAMETERS}
        problems = [
            f"{name}={startup[name]!r} (expected one of {_SPECS[name].choices})"
            for name in ("backend", "output_resolution", "input_transport", "scale.method")
            if startup[name] not in (_SPECS[name].choices or ())
        ]
        if startup["cloud.min_range_m"] > startup["cloud.max_range_m"]:
            problems.append("cloud.min_range_m must not exceed cloud.max_range_m")
        if problems:
            raise ConfigError(f"{self.get_name()}: invalid parameters: " + "; ".join(problems))
        self._stats = NodeStats()
        self._throttle = ReasonThrottle(_LOG_THROTTLE_S)
        # The workers take images from the subscription themselves (see _PulledByWorkers);
        # one at a time, so that the newest is always the one taken.
        self._pull_lock = threading.Lock()
        self._pulled_group = _PulledByWorkers()
        self._last_seq: dict[bytes, int] = {}  # publication sequence number per publisher
        # Serialized CameraInfo messages by stamp, taken by the workers (_take_infos).
        self._infos: StampCache[bytes] = StampCache()
        self._info_lock = threading.Lock()
        self._started_s = time.monotonic()
        self._stamps_match = True
        self._closing = False
        self._idle_logged = False
        self._input_reliable = bool(startup["reliable_input"])  # of the image subscription
        self._last_image_s = self._started_s
        self._input_problem: tuple[str, str] | None = None  # (reason, explanation)
        self._input_throttle = ReasonThrottle(_INPUT_LOG_THROTTLE_S)

        # An injected estimator stays its owner's to close.
        self._owns_estimator = estimator is None
        self._output_kind = self._check_scale_source(startup, estimator)
        self._scale_method = str(startup["scale.method"])
        self._ground_frame = str(startup["scale.ground_frame"])
        self._scale_tracker = ScaleTracker()
        self._last_scale: tuple[str, float, float, ScaleFit | None] | None = None
        self._tf_buffer: Any | None = None
        self._tf_listener: Any | None = None
        # What a failed TF lookup raises: tf2's TransformException family (set with the
        # buffer) and the core's InputError for a transform that is no camera mounting.
        self._tf_errors: tuple[type[BaseException], ...] = (InputError,)
        # (source, camera height m or None, pitch rad) of the last frame, for /diagnostics.
        self._last_mounting: tuple[str, float | None, float] | None = None
        if self._ground_frame and self._output_kind != "metric_depth":
            self._start_tf()
        self._estimators = [estimator] if estimator is not None else self._load_estimators(startup)
        self._estimator = self._estimators[0]
        self._warm_up_cloud()
        self._done: _InOrder[_Inferred] = _InOrder()
        self._gate = _WorkerGate()
        self._arrivals = itertools.count()
        self._last_published = -1
        # The data of the last message of each output, reused for the next (publish thread
        # only; see conversions.MessageBuffer).
        self._buffers = {name: conv.MessageBuffer() for name in ("depth", "cloud", "colormap")}
        # Images and clouds go out as bytes serialized here (one copy fewer for rclpy, see
        # conversions), unless the middleware does not read them back as written.
        self._raw_out = conv.raw_publishing_works()
        if not self._raw_out:
            self.get_logger().info(
                "publishing message objects: this middleware does not read the serialized "
                "form written by cloudypoints_ros.conversions"
            )
        # Serialized bytes go to rcl directly, without holding the GIL (rcl_direct).
        self._direct = direct_publisher() if self._raw_out else None
        # Serialized messages are built by the worker of each frame, which then also sends the
        # frames now next in order, one worker at a time (_publish_ready). Message objects
        # reuse one set of buffers: a publish thread builds and sends them (_publish_loop).
        self._send_lock = threading.Lock()
        self._model_name = str(getattr(getattr(self._estimator, "spec", None), "name", "?"))

        out = output_qos()
        # No QoS event handlers on the outputs: rclpy's executor walks every handler of every
        # entity on each wake-up (several per frame), which cost the node about a millisecond
        # of CPU per frame; the image subscription's problems are diagnosed by
        # _diagnose_input instead.
        quiet = PublisherEventCallbacks(use_default_callbacks=False)
        self._pub_depth = self.create_publisher(Image, "depth/image", out, event_callbacks=quiet)
        self._pub_info = self.create_publisher(
            CameraInfo, "depth/camera_info", out, event_callbacks=quiet
        )
        self._pub_points = self.create_publisher(PointCloud2, "points", out, event_callbacks=quiet)
        self._pub_colormap = self.create_publisher(
            Image, "depth/colormap", out, event_callbacks=quiet
        )
        self._pub_diag = self.create_publisher(
            DiagnosticArray, "/diagnostics", output_qos(10), event_callbacks=quiet
        )

        reliable = bool(startup["reliable_input"])
        self._compressed = startup["input_transport"] == "compressed"
        self._image_sub = self._subscribe_images(reliable)
        self._match_reliability = bool(startup["match_input_reliability"]) and not reliable
        if self._match_reliability:
            self._qos_timer = self.create_timer(1.0, self._match_input_reliability)
        # Taken by the workers too, only when they need one (_camera_info): at the camera's
        # rate through the executor, each cost a wake-up and a deserialisation under the GIL,
        # most of them for images that newest-wins never takes.
        self._info_sub = self.create_subscription(
            CameraInfo,
            "camera_info",
            _never_called,
            input_qos(reliable, depth=CAMERA_INFO_QUEUE_DEPTH),
            callback_group=self._pulled_group,
            raw=True,
        )
        self._stats_timer = self.create_timer(float(startup["stats_period_s"]), self._report)
        # Registered last: declaring parameters also runs these callbacks.
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # Two stages: inference of later frames overlaps the cloud assembly and publishing of
        # frame k (numpy and the inference runtimes release the GIL).
        self._workers = [
            threading.Thread(
                target=self._infer_loop,
                args=(est, i),
                name=f"{NODE_NAME}_infer{i}",
                daemon=True,
            )
            for i, est in enumerate(self._estimators)
        ]
        if not self._raw_out:  # message objects: one publish thread
            self._workers.append(
                threading.Thread(
                    target=self._publish_loop, name=f"{NODE_NAME}_publish", daemon=True
                )
            )
        for worker in self._workers:
            worker.start()
        self.get_logger().info(
            f"model '{self._model_name}' on backend {self._backend_name()} ({self._device()}, "
            f"inference workers: {len(self._estimators)}); "
            f"subscribed to {self._image_sub.topic_name} "
            f"({'reliable' if reliable else 'best effort'}) and {self._info_sub.topic_name}; "
            f"depth on {self._pub_depth.topic_name}, cloud on {self._pub_points.topic_name}"
        )
        if self._output_kind != "metric_depth":
            if self._ground_frame:
                source = f"the road, camera mounting from TF {self._ground_frame} -> image frame"
            elif startup["scale.camera_height_m"] > 0:
                source = (
                    f"the road, camera {startup['scale.camera_height_m']:.3f} m high, pitch "
                    f"{startup['scale.camera_pitch_rad']:.4f} rad"
                )
            else:
                source = "no ground fit"
            if startup["scale.fixed"] > 0:
                source += (
                    f"; fixed scale {startup['scale.fixed']:g}, shift "
                    f"{startup['scale.fixed_shift']:g}"
                )
            self.get_logger().info(
                f"{self._output_kind} model: metres from scale.method "
                f"{self._scale_method!r} ({source})"
            )

    def _check_scale_source(self, startup: dict[str, Any], estimator: Any | None) -> str:
        """The model's output kind; ConfigError (naming the parameter to set) when a relative
        model would have no way to metres."""
        if estimator is not None:
            spec = getattr(estimator, "spec", None)
        else:
            from cloudypoints_core.inference.package import load_model_package

            spec = load_model_package(str(startup["model_path"]) or None).spec
        kind = str(getattr(spec, "output_kind", "metric_depth"))
        if kind == "metric_depth":
            return kind
        name = getattr(spec, "name", "?")
        unknown = "scale and shift" if kind == "affine_inverse_depth" else "scale"
        what = f"model {name!r} gives {kind} (depth up to an unknown {unknown}), "
        method = startup["scale.method"]
        ground = startup["scale.camera_height_m"] > 0 or bool(startup["scale.ground_frame"])
        fixed = startup["scale.fixed"] > 0
        ground_hint = (
            "set scale.camera_height_m (metres above the road) and scale.camera_pitch_rad, or "
            "scale.ground_frame (read from TF, needs tf2_ros)"
        )
        if method == "none":
            raise ConfigError(
                what + "and scale.method is 'none': it would be published as metres. "
                f"Set scale.method to auto or ground_plane and {ground_hint}; or set scale.fixed"
            )
        if method == "fixed" and not fixed:
            raise ConfigError(what + "scale.method is 'fixed' but scale.fixed is not set (> 0)")
        if method == "ground_plane" and not ground:
            raise ConfigError(what + f"scale.method is 'ground_plane': {ground_hint}")
        if method == "auto" and not (ground or fixed):
            raise ConfigError(
                what + f"and has no metric scale source: {ground_hint}; or set scale.fixed "
                "(depth = scale.fixed / (output + scale.fixed_shift))"
            )
        return kind

    def _start_tf(self) -> None:
        import importlib

        try:
            # Through importlib: tf2_ros comes with a full ROS 2 install, not from PyPI.
            tf2_ros = importlib.import_module("tf2_ros")
        except ImportError as exc:
            raise ConfigError(
                f"scale.ground_frame={self._ground_frame!r} needs tf2_ros, which is not "
                "installed (a full ROS 2 install has it: apt install ros-<distro>-tf2-ros); "
                "set scale.camera_height_m and scale.camera_pitch_rad instead"
            ) from exc
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)
        self._tf_errors = (tf2_ros.TransformException, InputError)

    def _mounting(self, frame_id: str, opts: FrameOptions) -> tuple[float | None, float]:
        """(camera height m or None, pitch rad) for a frame: TF when scale.ground_frame is set
        (the parameters when the lookup fails), else the parameters.

        ``lookup_transform(ground_frame, frame_id)`` is the transform that maps points from the
        image's frame into the ground frame, i.e. the camera's pose in the ground frame: its
        translation's z is the camera height above the ground frame's origin. The latest
        transform (time 0) without waiting: a mounting changes slowly, and a worker blocked on
        TF would stall the pipeline.
        """
        height = opts.camera_height_m if opts.camera_height_m > 0 else None
        pitch = opts.camera_pitch_rad
        source = "parameters" if height is not None else "none"
        if self._tf_buffer is not None:
            from rclpy.time import Time

            try:
                tf = self._tf_buffer.lookup_transform(self._ground_frame, frame_id, Time())
                t, q = tf.transform.translation, tf.transform.rotation
                mount = mounting_from_transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
            except self._tf_errors as exc:
                self._degraded(
                    "no_ground_transform",
                    f"no usable transform {self._ground_frame} -> {frame_id} ({exc}); using "
                    + (
                        "the scale.camera_* parameters"
                        if height is not None
                        else "the last good scale fit (or scale.fixed)"
                    ),
                )
            else:
                height, pitch = mount.height_m, mount.pitch_rad
                source = f"tf {self._ground_frame} -> {frame_id}"
        self._last_mounting = (source, height, pitch)
        return height, pitch

    def _subscribe_images(self, reliable: bool) -> Any:
        self._input_reliable = reliable
        # Without rclpy's default QoS event handlers (see the publishers): _diagnose_input
        # reports an incompatible or silent camera in the log and /diagnostics.
        quiet = SubscriptionEventCallbacks(use_default_callbacks=False)
        # The callback never runs: the workers take the images (_pull).
        if self._compressed:
            return self.create_subscription(
                CompressedImage,
                "image/compressed",
                _never_called,
                input_qos(reliable),
                callback_group=self._pulled_group,
                event_callbacks=quiet,
            )
        # Raw: a worker gets the serialized bytes and reads them without a copy
        # (conversions.image_from_cdr); rclpy's deserialisation would copy the image 3 times.
        return self.create_subscription(
            Image,
            "image",
            _never_called,
            input_qos(reliable),
            callback_group=self._pulled_group,
            raw=True,
            event_callbacks=quiet,
        )

    def _match_input_reliability(self) -> None:
        """Subscribe reliable while every publisher of the image topic is reliable, else best
        effort (``match_input_reliability``).

        A best-effort subscription matches every publisher, but then a reliable publisher does
        not resend what is lost, and an image of a megabyte or more is lost whole when one of
        its fragments is: from a camera driver on Fast DDS's defaults (64 KiB fragments, a
        512 KiB shared-memory segment) a best-effort node received 0-22 of 30 640x480 rgb8
        images, a reliable one all of them (benchmarks/bench_dds_delivery.py). A reliable
        subscription would never match a best-effort publisher, hence the check, repeated as
        publishers come and go. The image queue stays keep-last 2: newest wins either way.
        """
        wanted = "sensor_msgs/msg/" + ("CompressedImage" if self._compressed else "Image")
        publishers = [
            p
            for p in self.get_publishers_info_by_topic(self._image_sub.topic_name)
            if p.topic_type == wanted
        ]
        if not publishers:
            return  # keep the current subscription until a camera shows up
        reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
        if reliable == self._input_reliable:
            return
        old = self._image_sub
        self._image_sub = self._subscribe_images(reliable)
        self.destroy_subscription(old)
        self.get_logger().info(
            f"image publishers on {self._image_sub.topic_name} are "
            + (
                "all reliable: subscribing reliable (no image lost to a dropped fragment)"
                if reliable
                else "not all reliable: subscribing best effort (matches every publisher)"
            )
        )

    def _load_estimators(self, startup: dict[str, Any]) -> list[Any]:
        """One model per inference worker (see the module docstring and ``inference_workers``)."""
        import importlib.util

        cores = usable_cores()
        workers = int(startup["inference_workers"])
        auto = workers == 0
        if auto:
            cpu_onnxruntime = str(startup["device"]) == "cpu" and (
                startup["backend"] == "onnxruntime"
                or (
                    startup["backend"] == "auto"
                    and importlib.util.find_spec("onnxruntime") is not None
                )
            )
            workers = min(2, cores) if cpu_onnxruntime else 1
        first = self._load_estimator(startup, workers, cores)
        if auto and workers > 1 and (first.backend_name, first.device) != ("onnxruntime", "cpu"):
            # auto picked another backend (e.g. the package has no ONNX file): one worker with
            # the thread count the user asked for.
            first.close()
            workers = 1
            first = self._load_estimator(startup, 1, cores)
        estimators = [first]
        try:
            for _ in range(workers - 1):
                estimators.append(self._load_estimator(startup, workers, cores, quiet=True))
        except BaseException:
            for est in estimators:
                est.close()
            raise
        for est in estimators:
            self._warm_up_network(est)
        return estimators

    def _warm_up_network(self, estimator: Any) -> None:
        """Run the network once on a blank input: a runtime's first run allocates its memory
        and picks kernels (tens of milliseconds), which would otherwise delay the first frame
        of every worker and drop the frames that arrive meanwhile."""
        spec, backend = estimator.spec, estimator.backend
        batch = np.zeros((1, 3, spec.input_height, spec.input_width), dtype=np.float32)
        try:
            if spec.mask_outputs:
                backend.infer_all(batch)
            else:
                backend.infer(batch)
        except Exception as exc:  # the first frame will report a real problem
            self.get_logger().warning(f"warming the network up failed: {exc}")

    def _load_estimator(
        self, startup: dict[str, Any], workers: int, cores: int, quiet: bool = False
    ) -> Any:
        from cloudypoints_core.inference.facade import DepthEstimator

        options: dict[str, Any] = {}
        threads = int(startup["num_threads"])
        if threads == 0 and workers > 1:
            threads = max(1, cores // workers)  # the workers share the cores
        if threads > 0:
            options["num_threads"] = threads
        if startup["backend"] in ("auto", "onnxruntime"):
            # ONNX Runtime's intra-op threads busy-wait between runs by default; here they would
            # spin on the cores that the DDS threads and the publish stage need at that moment
            # (measured: the node's frames/s rises by a large factor without it; the bare
            # network loses about a tenth; benchmarks/bench_node.py). Ignored by other backends.
            options["allow_spinning"] = False
        options["scale_method"] = str(startup["scale.method"])
        if startup["scale.fixed"] > 0:
            options["fixed_scale"] = float(startup["scale.fixed"])
            options["fixed_shift"] = float(startup["scale.fixed_shift"])
        # One tracker for all workers: they see one camera, so one smoothed scale.
        options["scale_tracker"] = self._scale_tracker
        path = str(startup["model_path"]) or None
        if not quiet:
            self.get_logger().info(
                f"loading model {path or '(bundled default)'} with backend "
                f"{startup['backend']} on {startup['device']}"
            )
            if _is_bundled_model(path):
                self.get_logger().warning(BUNDLED_MODEL_NOTE)
        return DepthEstimator.from_package(
            path, backend=str(startup["backend"]), device=str(startup["device"]), **options
        )

    def _backend_name(self) -> str:
        return str(getattr(self._estimator, "backend_name", "?"))

    def _device(self) -> str:
        return str(getattr(self._estimator, "device", "?"))

    @property
    def stats(self) -> NodeStats:
        return self._stats

    # ------------------------------------------------------------------------------ callbacks
    def _pull(self, io: _WorkerIO) -> _Job | None:
        """The newest image of the subscription, waiting up to _PULL_WAIT_S for one; None if
        none came. Called by a free worker: images that arrived meanwhile and were superseded
        in the DDS reader's keep-last queue were never taken (counted as ``skipped`` from the
        publishers' sequence numbers). Serialized images are taken through the worker's taker
        (GIL released: rcl_direct) where there is one."""
        wait_set, taker = io.wait_set, io.taker
        if not self._pull_lock.acquire(timeout=_PULL_WAIT_S):
            return None  # another worker is taking the image
        try:
            sub = self._image_sub  # re-created by _match_input_reliability
            taken = None
            try:
                # In use until __exit__: the executor may destroy it meanwhile
                # (_match_input_reliability), and rclpy then defers that until we are done.
                sub.handle.__enter__()
            except InvalidHandle:
                return None  # destroyed by _match_input_reliability an instant ago
            try:
                wait_set.clear_entities()
                wait_set.add_subscription(sub.handle)
                wait_set.wait(int(_PULL_WAIT_S * 1e9))
                if sub.handle.pointer not in wait_set.get_ready_entities("subscription"):
                    return None
                # The queue keeps the last two: take until empty so the newest is inferred.
                while (more := _take(sub, taker)) is not None:
                    if taken is not None:
                        self._stats.frame_in()
                        self._stats.frames_dropped()  # superseded before it was read
                    taken = more
                    self._count_skipped(more[1])
            finally:
                sub.handle.__exit__(None, None, None)
            if taken is None:
                return None
            now = time.monotonic()
            self._last_image_s = now
            self._stats.frame_in()
            return _Job(taken[0], now, next(self._arrivals))
        finally:
            self._pull_lock.release()

    def _count_skipped(self, info: Any) -> None:
        """Count the images of this publisher between the last taken and this one."""
        seq = info.get("publication_sequence_number")
        gid = info.get("publisher_gid")
        if seq is None or seq >= _SEQUENCE_UNSUPPORTED or not gid:
            return
        key = bytes(gid.get("data", b""))
        last = self._last_seq.get(key)
        self._last_seq[key] = seq
        if last is not None and seq > last + 1:
            self._stats.frames_skipped(seq - last - 1)

    def _take_infos(self, taker: SerializedTaker | None) -> None:
        """Move the CameraInfo messages that arrived into the stamp cache (serialized: only
        the one a frame uses is deserialised)."""
        sub = self._info_sub
        with self._info_lock, sub.handle:
            while (got := _take(sub, taker)) is not None:
                stamp = conv.header_stamp_ns(got[0])
                if stamp is not None:
                    self._infos.add(stamp, got[0])

    def _camera_info(self, stamp_ns: int, wait_s: float, io: _WorkerIO) -> bytes | None:
        """The serialized CameraInfo with ``stamp_ns``, waiting up to ``wait_s`` for it."""
        self._take_infos(io.taker)
        info = self._infos.lookup(stamp_ns)
        deadline = time.monotonic() + wait_s
        while info is None and (remaining := deadline - time.monotonic()) > 0:
            # Short slices: another worker may take it meanwhile (then it is in the cache).
            io.wait_set.clear_entities()
            io.wait_set.add_subscription(self._info_sub.handle)
            io.wait_set.wait(int(min(remaining, _INFO_SLICE_S) * 1e9))
            self._take_infos(io.taker)
            info = self._infos.lookup(stamp_ns)
        return info

    def _on_set_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        values = {p.name: self.get_parameter(p.name).value for p in PARAMETERS}
        for param in params:
            spec = _SPECS.get(param.name)
            if spec is None:
                continue
            if spec.startup_only and param.value != values[param.name]:
                return SetParametersResult(
                    successful=False,
                    reason=(
                        f"{param.name} is read at start-up only (the node would have to reload "
                        "the model or re-create its subscriptions while frames are in flight); "
                        "restart the node with the new value, e.g. ros2 launch cloudypoints_ros "
                        "depth.launch.py model:=... backend:=..."
                    ),
                )
            if spec.choices is not None and param.value not in spec.choices:
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} must be one of {spec.choices}, got {param.value!r}",
                )
            values[param.name] = param.value
        if (
            self._output_kind != "metric_depth"
            and values["scale.camera_height_m"] <= 0
            and not values["scale.ground_frame"]
            and (values["scale.method"] == "ground_plane" or values["scale.fixed"] <= 0)
            and values["scale.method"] != "fixed"
        ):
            return SetParametersResult(
                successful=False,
                reason=(
                    "scale.camera_height_m is the only metric scale source of the "
                    f"{self._output_kind} model; it must stay > 0"
                ),
            )
        if values["cloud.min_range_m"] > values["cloud.max_range_m"]:
            return SetParametersResult(
                successful=False,
                reason=(
                    f"cloud.min_range_m ({values['cloud.min_range_m']}) must not exceed "
                    f"cloud.max_range_m ({values['cloud.max_range_m']})"
                ),
            )
        return SetParametersResult(successful=True)

    def _warm_up_cloud(self) -> None:
        """Back-project a tiny frame with the current cloud options, so that the compiled
        kernels (numba, when installed) are built now rather than on the first frame."""
        opts = self._frame_options()
        if opts.organized:
            return
        tiny = Intrinsics(fx_px=2.0, fy_px=2.0, cx_px=0.5, cy_px=0.5, width=2, height=2)
        colours: list[Any] = [None]
        if opts.color:
            # A raw image's pixels are a read-only view of the message (a type of its own for
            # the compiler); decoded or converted ones are writeable.
            read_only = np.zeros((2, 2, 3), dtype=np.uint8)
            read_only.flags.writeable = False
            colours = [read_only, np.zeros((2, 2, 3), dtype=np.uint8)]
        for colour in colours:
            backproject_packed(
                np.ones((2, 2), dtype=np.float32),
                tiny,
                colour,
                min_range_m=opts.min_range_m,
                max_range_m=opts.max_range_m,
                organised=False,
            )

    # ------------------------------------------------------------------------------ worker
    def _frame_options(self) -> FrameOptions:
        v = {p.name: p.value for p in self.get_parameters([s.name for s in PARAMETERS])}
        return FrameOptions(
            output_resolution=str(v["output_resolution"]),
            camera_info_wait_s=float(v["camera_info_wait_s"]),
            stride=int(v["cloud.stride"]),
            min_range_m=float(v["cloud.min_range_m"]),
            max_range_m=float(v["cloud.max_range_m"]),
            color=bool(v["cloud.color"]),
            organized=bool(v["cloud.organized"]),
            publish_colormap=bool(v["publish_colormap"]),
            fallback=(
                float(v["fallback.fx"]),
                float(v["fallback.fy"]),
                float(v["fallback.cx"]),
                float(v["fallback.cy"]),
            ),
            fallback_timeout_s=float(v["fallback.timeout_s"]),
            camera_height_m=float(v["scale.camera_height_m"]),
            camera_pitch_rad=float(v["scale.camera_pitch_rad"]),
        )

    def _infer_loop(self, estimator: Any, worker: int = 0) -> None:
        context = self.context.handle
        if context is None:  # already shut down
            return
        io = _WorkerIO(_rclpy.WaitSet(1, 0, 0, 0, 0, 0, context), serialized_taker())
        try:
            self._infer_frames(estimator, worker, io)
        finally:
            if io.taker is not None:
                io.taker.close()

    def _infer_frames(self, estimator: Any, worker: int, io: _WorkerIO) -> None:
        while not self._closing:
            if not self._gate.may_start(worker):
                time.sleep(0.05)  # the other workers take the frames meanwhile
                continue
            if not self._done.wait_for_room(timeout=0.5):
                continue
            try:
                job = self._pull(io)
            except Exception as exc:  # e.g. the context shut down under the worker
                if self._closing:
                    return
                self._reject("input_take_failed", f"{type(exc).__name__}: {exc}", error=True)
                time.sleep(_PULL_WAIT_S)
                continue
            if job is None:
                continue
            self._done.start(job.seq)
            item = None
            token = self._gate.begin()
            t0 = time.perf_counter()
            try:
                item = self._guarded(self._infer, (job, estimator, io))
                if item is not None:
                    self._stats.stage("infer", time.perf_counter() - t0)
            finally:
                self._gate.end(time.perf_counter() - t0, token)
                if item is not None and self._raw_out:
                    # Serialized messages have buffers of their own: the workers build them in
                    # parallel (and send them, _publish_ready), so no single thread is the
                    # serial stage of the pipeline (benchmarks/bench_node.py).
                    item = self._guarded(self._prepare, item)
                # Also for a rejected frame, so that it never holds back later ones.
                for _ in range(self._done.finish(job.seq, item)):
                    self._stats.frames_dropped()  # superseded by a newer finished frame
                if self._raw_out:
                    self._publish_ready()
                # The input watchdog counts only time a worker was free to take an image.
                self._last_image_s = time.monotonic()

    def _publish_loop(self) -> None:
        """The publish thread (message objects): sends finished frames in order."""
        while not self._closing:
            item = self._done.get(timeout=0.5)
            if item is not None:
                self._publish_next(item)

    def _publish_ready(self) -> None:
        """Serialized messages: the worker that just finished a frame sends every finished
        frame now next in order (its own, and newer ones that waited for it), one worker at a
        time. A newer frame finished while an older one still runs waits in ``_done`` for the
        worker of the older one. No hand-over to another thread: under overload that wake-up
        and the queue behind a busy publish thread were a millisecond at the median and
        several at p99."""
        with self._send_lock:
            while (item := self._done.get(timeout=0.0)) is not None:
                self._publish_next(item)

    def _publish_next(self, item: _Inferred) -> None:
        if item.job.seq < self._last_published:
            # Overtaken by a newer frame (a worker took it an instant after another took
            # a newer one): publishing it now would send time backwards.
            self._stats.frames_dropped()
            return
        self._last_published = item.job.seq
        t0 = time.perf_counter()
        self._guarded(self._publish, item)
        self._stats.stage("publish", time.perf_counter() - t0)

    def _guarded(self, stage: Any, arg: Any) -> Any:
        """Run one stage for one frame; a failure drops the frame (counted), never the node."""
        try:
            return stage(arg)
        except _Rejected as exc:
            self._reject(exc.reason, str(exc))
        except Exception as exc:  # the node must outlive any bad frame; counted and logged
            if not self._closing:
                self._reject(
                    "internal_error",
                    f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}",
                    error=True,
                )
        return None

    def _reject(self, reason: str, detail: str, *, error: bool = False) -> None:
        self._stats.error(reason)
        due, suppressed = self._throttle.should_log(reason)
        if due:
            more = f" [{suppressed} more since the last report]" if suppressed else ""
            text = f"dropped a frame ({reason}): {detail}{more}"
            if error:
                self.get_logger().error(text)
            else:
                self.get_logger().warning(text)

    def _degraded(self, reason: str, detail: str) -> None:
        self._stats.warning(reason)
        due, suppressed = self._throttle.should_log(reason)
        if due:
            more = f" [{suppressed} more since the last report]" if suppressed else ""
            self.get_logger().warning(f"{detail}{more}")

    def _intrinsics_for(
        self, stamp_ns: int, width: int, height: int, opts: FrameOptions, io: _WorkerIO
    ) -> Intrinsics:
        wait = opts.camera_info_wait_s if self._stamps_match else 0.0
        found = self._camera_info(stamp_ns, wait, io)
        info: CameraInfo | None = None
        if found is not None:
            self._stamps_match = True
        else:
            latest = self._infos.latest()
            if latest is not None:
                # After one miss, stop waiting on every frame: a driver whose stamps never match
                # would otherwise cost camera_info_wait_s per frame.
                self._stamps_match = False
                self._degraded(
                    "camera_info_stamp_mismatch",
                    f"no CameraInfo with the image's stamp {stamp_ns} ns; using the latest "
                    f"(stamp {latest[0]} ns)",
                )
                found = latest[1]
        if found is not None:
            try:
                info = deserialize_message(found, CameraInfo)
            except Exception as exc:  # bytes the middleware delivered but cannot read
                raise _Rejected("bad_camera_info", f"{type(exc).__name__}: {exc}") from exc
        if info is None:
            return self._fallback_intrinsics(width, height, opts)
        try:
            intr = conv.camera_info_to_intrinsics(info)
        except CloudyPointsError as exc:
            raise _Rejected("bad_camera_info", str(exc)) from exc
        if (intr.width, intr.height) != (width, height):
            raise _Rejected(
                "camera_info_size_mismatch",
                f"CameraInfo is for {intr.width}x{intr.height} but the image is {width}x{height}",
            )
        return intr

    def _fallback_intrinsics(self, width: int, height: int, opts: FrameOptions) -> Intrinsics:
        fx, fy, cx, cy = opts.fallback
        waited = time.monotonic() - self._started_s
        if fx <= 0 or waited < opts.fallback_timeout_s:
            hint = (
                f" (fallback intrinsics in {opts.fallback_timeout_s - waited:.1f} s)"
                if fx > 0
                else "; set fallback.fx (and fy, cx, cy) to run without one"
            )
            raise _Rejected(
                "no_camera_info", f"no CameraInfo received on {self._info_sub.topic_name}{hint}"
            )
        intr = Intrinsics(
            fx_px=fx,
            fy_px=fy if fy > 0 else fx,
            cx_px=cx if cx >= 0 else (width - 1) / 2.0,
            cy_px=cy if cy >= 0 else (height - 1) / 2.0,
            width=width,
            height=height,
        )
        self._degraded(
            "camera_info_fallback",
            f"no CameraInfo on {self._info_sub.topic_name}; using the fallback intrinsics "
            f"fx={intr.fx_px:.1f} fy={intr.fy_px:.1f} cx={intr.cx_px:.1f} cy={intr.cy_px:.1f}",
        )
        return intr

    def _infer(self, work: tuple[_Job, Any, _WorkerIO]) -> _Inferred:
        job, estimator, io = work
        msg = conv.image_from_cdr(job.msg) if isinstance(job.msg, bytes) else job.msg
        try:
            rgb = conv.msg_to_rgb(msg)
        except CloudyPointsError as exc:
            raise _Rejected(conv.classify_image_error(msg, exc), str(exc)) from exc
        height, width = rgb.shape[:2]
        opts = self._frame_options()
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        intr = self._intrinsics_for(stamp_ns, width, height, opts, io)
        mounting: dict[str, Any] = {}
        if self._output_kind != "metric_depth":
            height, pitch = self._mounting(str(msg.header.frame_id), opts)
            mounting = {"camera_height_m": height, "camera_pitch_rad": pitch}
        try:
            result = estimator.predict(
                rgb, intr, output_resolution=opts.output_resolution, **mounting
            )
        except (ScaleError, ConfigError) as exc:
            raise _Rejected("no_metric_scale", str(exc)) from exc
        except CloudyPointsError as exc:
            raise _Rejected("inference_error", str(exc)) from exc
        self._last_scale = (
            str(getattr(result, "scale_method", "?")),
            float(getattr(result, "scale", math.nan)),
            float(getattr(result, "shift", 0.0)),
            getattr(result, "scale_fit", None),
        )
        return _Inferred(job, msg.header, rgb, intr, result, opts, stamp_ns)

    def _prepare(self, item: _Inferred) -> _Inferred:
        return replace(item, outgoing=self._build(item))

    def _build(self, item: _Inferred) -> _Outgoing:
        """One frame's messages. Each step is timed into the stats ("publish.<step>", in
        /diagnostics) so that the cost of publishing can be read off a running node. Clouds and
        colour maps cost milliseconds per frame: built only while someone listens."""
        header, opts = item.header, item.opts
        depth, d_intr = item.result.depth_m, item.result.intrinsics
        clock = time.perf_counter
        try:
            t0 = clock()
            depth_msg = self._image_out(depth, "32FC1", header, "depth")
            info = conv.camera_info_msg(d_intr, conv.copy_header(header))
            self._stats.stage("publish.depth_msg", clock() - t0)
            cloud = None
            if self._pub_points.get_subscription_count() > 0:
                cloud = self._build_cloud(item)
            colormap = None
            if opts.publish_colormap and self._pub_colormap.get_subscription_count() > 0:
                t0 = clock()
                spec = getattr(self._estimator, "spec", None)
                lo = float(getattr(spec, "min_depth_m", 0.0))
                hi = min(float(getattr(spec, "max_depth_m", 80.0)), opts.max_range_m)
                colours = colorize_depth(depth, lo, hi if hi > lo else lo + 1.0)
                colormap = self._image_out(colours, "rgb8", header, "colormap")
                self._stats.stage("publish.colormap", clock() - t0)
        except CloudyPointsError as exc:
            raise _Rejected("output_error", str(exc)) from exc
        return _Outgoing(depth_msg, info, cloud, colormap)

    def _image_out(
        self, pixels: Any, encoding: str, header: conv.HeaderLike, output: str
    ) -> Image | bytes:
        """An output image as serialized bytes, or as a message object whose data is this
        output's reused buffer."""
        if self._raw_out:
            return conv.serialized_image_msg(pixels, encoding, header)
        return conv.image_msg(pixels, encoding, conv.copy_header(header), self._buffers[output])

    def _publish(self, item: _Inferred) -> None:
        """Send one frame's messages (built here unless a worker built them)."""
        out = item.outgoing if item.outgoing is not None else self._build(item)
        clock = time.perf_counter
        t0 = clock()
        self._send(self._pub_depth, out.depth)
        self._pub_info.publish(out.info)
        t1 = clock()
        self._stats.stage("publish.depth_send", t1 - t0)
        if out.cloud is not None:
            self._send(self._pub_points, out.cloud)
            self._stats.stage("publish.cloud_send", clock() - t1)
        if out.colormap is not None:
            self._send(self._pub_colormap, out.colormap)
        now_ns = self.get_clock().now().nanoseconds
        latency = (now_ns - item.stamp_ns) / 1e9
        latency_s = latency if 0.0 <= latency <= _PLAUSIBLE_LATENCY_S else None
        self._stats.frame_out(latency_s, time.monotonic() - item.job.received_s)

    def _send(self, publisher: Any, msg: Any) -> None:
        """Publish serialized bytes straight through rcl, with the GIL released where possible
        (``rcl_direct``: the inference workers keep running while the middleware copies
        megabytes), or a message object (rclpy converts and serialises it)."""
        if self._direct is not None and isinstance(msg, bytes):
            self._direct.publish(publisher, msg)
        else:
            publisher.publish(msg)

    def _build_cloud(self, item: _Inferred) -> PointCloud2 | bytes:
        """Back-project straight into the message's data: the serialized message's own bytes,
        or the PointCloud2's reused buffer (sent before the next frame refills it)."""
        opts, depth, d_intr = item.opts, item.result.depth_m, item.result.intrinsics
        clock = time.perf_counter
        t0 = clock()
        colour = None
        if opts.color:
            colour = item.rgb
            if depth.shape != colour.shape[:2]:
                colour, _ = resize_image(
                    item.rgb, item.intrinsics, d_intr.width, d_intr.height, "area"
                )
        writer: conv.CloudWriter | None = None
        buffer = self._buffers["cloud"]
        if self._raw_out:
            fields = XYZ_FIELDS if colour is None else XYZRGB_FIELDS
            writer = conv.CloudWriter(item.header, fields)
        packed = backproject_packed(
            depth,
            d_intr,
            colour,
            stride=opts.stride,
            min_range_m=opts.min_range_m,
            max_range_m=opts.max_range_m,
            organised=opts.organized,
            out=buffer.allocate if writer is None else writer.allocate,
        )
        t1 = clock()
        msg: PointCloud2 | bytes = (
            conv.cloud_msg(packed, conv.copy_header(item.header), buffer)
            if writer is None
            else writer.finish(packed)
        )
        del packed  # the buffer's view: released before the next frame resizes it
        self._stats.stage("publish.cloud_build", t1 - t0)
        self._stats.stage("publish.cloud_msg", clock() - t1)
        return msg

    # ------------------------------------------------------------------------------ health
    def _diagnose_input(self) -> tuple[str, str] | None:
        """(reason, explanation with the fix) when the image topic has publishers but no image
        arrived for NO_IMAGES_WARN_S; None otherwise. DDS drops these cases silently: a
        best-effort publisher never matches a reliable subscription, and a best-effort image of
        a megabyte or more is lost whole when one of its 64 KiB fragments is."""
        silent_s = time.monotonic() - self._last_image_s
        if silent_s < NO_IMAGES_WARN_S:
            return None
        topic = self._image_sub.topic_name
        publishers = self.get_publishers_info_by_topic(topic)
        if not publishers:
            return None
        wanted = "sensor_msgs/msg/" + self._image_sub.msg_type.__name__
        typed = [p for p in publishers if p.topic_type == wanted]
        head = (
            f"{len(publishers)} publisher(s) on {topic} but no image arrived for "
            f"{silent_s:.0f} s: "
        )
        if not typed:
            types = sorted({p.topic_type for p in publishers})
            return "input_type_mismatch", head + (
                f"they publish {', '.join(types)}, the node expects {wanted}; set "
                "input_transport (raw: Image on 'image', compressed: CompressedImage on "
                "'image/compressed') or remap 'image' to the camera's image topic"
            )
        best_effort = [
            p for p in typed if p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        ]
        if self._input_reliable and len(best_effort) == len(typed):
            return "input_qos_incompatible", head + (
                "they publish best effort and the node subscribes reliable (reliable_input: "
                "true), which DDS never matches; set reliable_input:=false"
            )
        hint = (
            f"give the camera driver's process FASTDDS_DEFAULT_PROFILES_FILE=<install>/"
            f"{DDS_PROFILE_HINT} (the node gets it from the launch file's dds_profile)"
        )
        if not self._input_reliable:
            return "input_lost_best_effort", head + (
                "large images sent best effort are lost whole when one fragment is (Fast DDS's "
                f"defaults cut them into 64 KiB pieces); {hint}"
                + (
                    ", or set reliable_input:=true since the camera publishes reliably"
                    if len(best_effort) < len(typed)
                    else ""
                )
            )
        return "input_not_arriving", head + (
            f"the camera may have stopped sending (check ros2 topic hz {topic}); with large "
            f"images, {hint}"
        )

    def _check_input(self) -> None:
        self._input_problem = problem = self._diagnose_input()
        if problem is not None:
            due, _ = self._input_throttle.should_log(problem[0])
            if due:
                self.get_logger().warning(problem[1])

    def _report(self) -> None:
        self._check_input()
        snap = self._stats.snapshot()
        if snap.period_frames_in > 0 or snap.period_errors > 0:
            self._idle_logged = False
            self.get_logger().info(snap.summary())
        elif not self._idle_logged:
            # Once per idle spell, so a node waiting for a camera does not flood the log.
            self._idle_logged = True
            done = f" ({snap.summary()})" if snap.frames_in else ""
            self.get_logger().info(f"waiting for images on {self._image_sub.topic_name}{done}")
        self._pub_diag.publish(self.diagnostics(snap))

    def diagnostics(self, snap: StatsSnapshot) -> DiagnosticArray:
        """The DiagnosticArray for ``snap`` (one status named after the node)."""
        status = DiagnosticStatus()
        status.name = f"{self.get_fully_qualified_name()}: depth estimation"
        status.hardware_id = f"{self._backend_name()}/{self._device()}"
        problem = self._input_problem
        if problem is not None:
            status.level = DiagnosticStatus.WARN
            status.message = problem[1]
        elif snap.frames_in == 0:
            status.level = DiagnosticStatus.OK
            status.message = f"waiting for images on {self._image_sub.topic_name}"
        elif snap.period_errors > 0:
            status.level = DiagnosticStatus.WARN
            status.message = f"{snap.period_errors} frames rejected in the last period"
        elif snap.period_frames_in > 0 and snap.period_frames_out == 0:
            status.level = DiagnosticStatus.WARN
            status.message = "images arrive but no depth was published in the last period"
        else:
            status.level = DiagnosticStatus.OK
            status.message = f"publishing depth at {snap.output_rate_hz:.1f} Hz"
        values: list[tuple[str, object]] = [
            ("model", self._model_name),
            ("backend", self._backend_name()),
            ("device", self._device()),
            ("frames_in", snap.frames_in),
            ("frames_out", snap.frames_out),
            ("dropped", snap.dropped),
            ("skipped", snap.skipped),
            ("errors", snap.errors_total),
            ("input_rate_hz", f"{snap.input_rate_hz:.2f}"),
            ("output_rate_hz", f"{snap.output_rate_hz:.2f}"),
            ("input_problem", problem[0] if problem is not None else "none"),
            ("workers_slowdown", f"{self._gate.slowdown:.2f}"),
        ]
        timings = [("latency", snap.latency_ms), ("processing", snap.processing_ms)]
        timings += [(f"stage_{k}", v) for k, v in sorted(snap.stages_ms.items())]
        for key, pcts in timings:
            for name, value in pcts.items():
                values.append((f"{key}_{name}_ms", "nan" if math.isnan(value) else f"{value:.1f}"))
        values += self._scale_values()
        values += [(f"error.{k}", v) for k, v in sorted(snap.errors.items())]
        values += [(f"warning.{k}", v) for k, v in sorted(snap.warnings.items())]
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        return array

    def _scale_values(self) -> list[tuple[str, object]]:
        """How the last frame got metres: method, scale, shift, the ground fit and its tracker."""
        values: list[tuple[str, object]] = [
            ("output_kind", self._output_kind),
            ("scale.method", self._scale_method),
        ]
        last = self._last_scale
        if last is not None:
            used, scale, shift, fit = last
            values += [("scale.used", used), ("scale.scale", f"{scale:.6g}")]
            values += [("scale.shift", f"{shift:.6g}")]
            if fit is not None:
                values += [
                    ("scale.fit", fit.method),
                    ("scale.inlier_ratio", f"{fit.inlier_ratio:.3f}"),
                    ("scale.fit_ok", str(fit.ok).lower()),
                ]
        if self._output_kind != "metric_depth":
            mounting = self._last_mounting
            if mounting is not None:
                source, height, pitch = mounting
                values += [
                    ("scale.mounting", source),
                    ("scale.camera_height_m", "none" if height is None else f"{height:.4f}"),
                    ("scale.camera_pitch_rad", f"{pitch:.5f}"),
                ]
            state = self._scale_tracker.state
            values += [
                ("scale.fits", state.fits),
                ("scale.fit_failures", state.failures),
                ("scale.fit_outliers", state.outliers),
                ("scale.frames_held", state.frames_since_fit),
            ]
            if state.reason:
                values.append(("scale.last_problem", state.reason))
        return values

    # ------------------------------------------------------------------------------ teardown
    def destroy_node(self) -> None:
        """Stop the workers (each finishes its frame), release the model, destroy the node."""
        self._closing = True
        done = getattr(self, "_done", None)
        if done is not None:
            done.close()
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout=30.0)
        self._workers = []
        estimators, self._estimators, self._estimator = self._estimators, [], None
        if getattr(self, "_owns_estimator", False):
            for estimator in estimators:
                estimator.close()
        super().destroy_node()


#: Seconds a Python thread may hold the GIL while another waits for it (Python's default is
#: 5 ms). The node hands every frame from thread to thread (executor, inference, publishing) and
#: numpy and the runtimes give the GIL back around every large operation: under a flood of
#: images each re-acquisition could wait up to the interval behind the executor thread, adding
#: tens of milliseconds to a frame.
SWITCH_INTERVAL_S = 0.0005


def configure_process() -> None:
    """Process-wide settings of the node's executable (not of the class: a library must not
    change its host process); also used by benchmarks/bench_node.py's stand-in servers."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def main(args: Sequence[str] | None = None) -> int:
    """Run the node until Ctrl-C; 0 on a clean stop, 1 when it cannot start (bad model/params),
    2 on malformed ROS arguments."""
    configure_process()
    try:
        rclpy.init(args=list(args) if args is not None else None)
    except RuntimeError as exc:  # rclpy's RCLError: e.g. "-p name:=" without a value
        rclpy.logging.get_logger(NODE_NAME).fatal(f"bad ROS arguments: {exc}")
        return 2
    node: DepthNode | None = None
    executor: SingleThreadedExecutor | None = None
    try:
        try:
            node = DepthNode()
        except (CloudyPointsError, rclpy.exceptions.ParameterException) as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        # Ctrl-C at any moment, while starting (e.g. during the start-up log lines) or
        # spinning, is a clean stop.
        pass
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
