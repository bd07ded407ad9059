"""``cloudypoints doctor``: the report's content, its text and JSON forms, and no ROS import."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from cloudypoints_core.cli import doctor as doctor_module
from cloudypoints_core.cli.doctor import collect, doctor, format_report
from cloudypoints_core.cli.main import main
from cloudypoints_core.inference.backends.cuda_api import GpuDiscovery
from cloudypoints_core.inference.backends.engine_cache import (
    EngineBuildOptions,
    EngineCache,
    EngineKey,
    GpuInfo,
)

ENV = {
    "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp",
    "ROS_DISTRO": "kilted",
    "ROS_DOMAIN_ID": "25",
}


@pytest.fixture
def cache_with_one_engine(tmp_path: Path) -> Path:
    key = EngineKey(
        model_name="tiny",
        onnx_sha256="ab" * 32,
        tensorrt_version="10.9.0.34",
        gpu=GpuInfo("Orin", (8, 7)),
        options=EngineBuildOptions(),
        input_shape=(1, 3, 32, 64),
        source="/models/tiny/model.onnx",
    )
    EngineCache(tmp_path / "engines").store(key, b"x" * 2**20)
    return tmp_path / "engines"


def test_report_lists_libraries_cache_and_ros_settings(
    cache_with_one_engine: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "fastdds.xml"
    profile.write_text("<profiles/>")
    report = collect(
        environ={**ENV, "FASTDDS_DEFAULT_PROFILES_FILE": str(profile)},
        cache_dir=cache_with_one_engine,
    )
    libs = report["libraries"]
    assert (
        libs["onnxruntime"]["importable"]
        and "CPUExecutionProvider" in (libs["onnxruntime"]["providers"])
    )
    assert libs["torch"]["importable"] and "cuda_build" in libs["torch"]
    assert set(libs) == {"onnxruntime", "torch", "tensorrt", "cuda-bindings", "onnx", "numba"}
    [entry] = report["engine_cache"]["entries"]
    assert (entry["model"], entry["tensorrt"], entry["precision"]) == ("tiny", "10.9.0.34", "fp16")
    assert entry["gpu"] == "Orin (sm 8.7)" and entry["size_mib"] == 1.0
    assert report["engine_cache"]["CLOUDYPOINTS_ENGINE_CACHE"] is None
    ros = report["ros"]
    assert ros["rmw_in_use"] == "rmw_cyclonedds_cpp"
    assert ros["fastdds_profile_exists"] is True
    assert report["auto"]["order"][0] in ("onnxruntime on cpu", "torch on cpu") or (
        report["gpus"]["count"] > 0
    )
    text = format_report(report)
    assert "RMW_IMPLEMENTATION             rmw_cyclonedds_cpp\n" in text
    assert f"FASTDDS_DEFAULT_PROFILES_FILE  {profile} (exists)" in text
    assert f"engine cache: {cache_with_one_engine}\n" in text
    assert "tiny  TensorRT 10.9.0.34  Orin (sm 8.7)  fp16  1.0 MiB" in text


def test_unset_middleware_and_missing_profile_are_said(tmp_path: Path) -> None:
    report = collect(
        environ={"FASTDDS_DEFAULT_PROFILES_FILE": str(tmp_path / "nope.xml")},
        cache_dir=tmp_path / "none",
    )
    text = format_report(report)
    assert "RMW_IMPLEMENTATION             (unset) -> rmw_fastrtps_cpp (default)" in text
    assert "nope.xml (MISSING)" in text
    assert "(does not exist yet)" in text


def test_gpus_show_who_saw_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cloudypoints_core.inference.backends import EnvironmentProbe

    seen = GpuDiscovery(
        count=1,
        via="NVML (NVIDIA driver)",
        gpus=(GpuInfo("NVIDIA L4", (8, 9)),),
        notes=("torch: torch 2.13.0+cpu is a CPU-only build",),
    )
    monkeypatch.setattr(EnvironmentProbe, "gpus", lambda self: seen)
    report = collect(environ={}, cache_dir=tmp_path)
    text = format_report(report)
    assert "GPUs: 1 (seen by: NVML (NVIDIA driver))\n  CUDA_VISIBLE_DEVICES (unset)\n" in text
    assert "  cuda:0  NVIDIA L4  sm 8.9\n" in text
    assert "  - torch: torch 2.13.0+cpu is a CPU-only build" in text
    # With a GPU, auto tries the GPU backends first (here: ONNX Runtime lacks CUDA, so skipped).
    assert any("onnxruntime on cuda:0" in s for s in report["auto"]["skipped"])


def test_a_failing_check_is_a_line_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(doctor_module, "_gpus", broken)
    text = format_report(collect(environ={}, cache_dir=tmp_path))
    assert "discovery failed: RuntimeError: driver exploded" in text


def test_json_through_main_round_trips(
    capsys: pytest.CaptureFixture[str], cache_with_one_engine: Path
) -> None:
    assert main(["doctor", "--json", "--cache-dir", str(cache_with_one_engine)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["engine_cache"]["entries"][0]["model"] == "tiny"
    assert data["cloudypoints"]


def test_doctor_never_imports_rclpy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delitem(sys.modules, "rclpy", raising=False)
    out = io.StringIO()
    assert doctor(stream=out, environ={}, cache_dir=tmp_path) == 0
    assert "rclpy" not in sys.modules
    assert out.getvalue().startswith("cloudypoints ")
