"""Fixtures of the ROS tests: a private DDS domain, an executor thread, depth nodes under test.

Everything runs over the real rclpy and DDS (Fast DDS from PyPI here), on localhost only and on a
domain id of this test process, so parallel runs and a live robot never see each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy", reason="the ROS tests need rclpy (pip install ros-rclpy)")

from harness import Probe  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_fixtures import make_model_package, test_domain_id  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "config" / "depth.yaml"
#: Frames of the tests: small, so that a round trip over DDS costs milliseconds.
WIDTH, HEIGHT = 128, 64


@pytest.fixture(scope="session")
def ros_domain() -> Iterator[int]:
    """This process's DDS domain, also exported for subprocesses (restored afterwards)."""
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    domain = test_domain_id()
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    yield domain
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ONNX model package (64x32 input), read-only for the tests."""
    return make_model_package(tmp_path_factory.mktemp("ros_model"))


@pytest.fixture(scope="session")
def reference_estimator(model_dir: Path) -> Any:
    """The facade on the same package: what the node's output must equal."""
    from cloudypoints_core.inference.facade import DepthEstimator

    estimator = DepthEstimator.from_package(model_dir, backend="onnxruntime", device="cpu")
    yield estimator
    estimator.close()


@pytest.fixture(scope="session")
def frames() -> list[Any]:
    from cloudypoints_core.data.synthcity import render_frame

    return [render_frame(seed=5, width=WIDTH, height=HEIGHT, index=i) for i in range(3)]


@dataclass
class RosEnv:
    """A context with an executor spinning in a thread; nodes are added and removed by tests."""

    context: Context
    executor: SingleThreadedExecutor
    nodes: list[Any] = field(default_factory=list)

    def start_depth_node(
        self,
        namespace: str,
        model_dir: Path,
        overrides: dict[str, Any] | None = None,
        estimator: Any | None = None,
    ) -> tuple[Any, Probe]:
        """A DepthNode with config/depth.yaml plus ``overrides``, and a connected Probe."""
        from cloudypoints_ros.depth_node import DepthNode

        values = {"model_path": str(model_dir), "stats_period_s": 0.3, **(overrides or {})}
        node = DepthNode(
            estimator=estimator,
            namespace=namespace,
            context=self.context,
            cli_args=["--ros-args", "--params-file", str(PARAMS_FILE)],
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
        probe = Probe(self.context, namespace)
        self.add_node(node)
        self.add_node(probe.node)
        probe.wait_connected()
        return node, probe

    def add_node(self, node: Any) -> Any:
        """Spin ``node`` in the executor thread; destroyed with the fixture."""
        self.executor.add_node(node)
        self.nodes.append(node)
        return node


@pytest.fixture(scope="module")
def ros_env(ros_domain: int) -> Iterator[RosEnv]:
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain)
    executor = SingleThreadedExecutor(context=context)
    thread = threading.Thread(target=executor.spin, name="test_executor", daemon=True)
    thread.start()
    env = RosEnv(context, executor)
    try:
        yield env
    finally:
        # Stop spinning before destroying nodes: a node destroyed under a waiting executor
        # can take the process down from C++.
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=5.0)
        for node in reversed(env.nodes):
            node.destroy_node()
        context.try_shutdown()
