"""``cloudypoints predict`` and ``build-engine``, as typed functions and through ``main``."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from inference_fixtures import tiny_factory

from cloudypoints_core.cli import main as cli_main
from cloudypoints_core.cli.predict import camera_from_args, predict_image
from cloudypoints_core.errors import DatasetError, InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.pointcloud import read_ply

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def only_my_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() imports every command module; test these two without depending on the others.
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("predict", "build_engine"))


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    rgb = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    return path


def test_predict_writes_depth_picture_cloud_and_summary(
    tiny_package_dir: Path, image_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = predict_image(image_path, out, model=tiny_package_dir, fx=80.0, cx=49.5, cy=29.5)
    assert code == 0
    depth = np.load(out / "street_depth.npy")
    assert depth.shape == (60, 100) and depth.dtype == np.float32
    picture = cv2.imread(str(out / "street_depth.png"))
    assert picture is not None and picture.shape == (60, 100, 3)
    xyz, rgb = read_ply(out / "street.ply")
    valid = np.isfinite(depth)
    assert xyz.shape == (int(valid.sum()), 3) and rgb is not None
    # Points are the back-projection of the depth image with the given intrinsics.
    np.testing.assert_allclose(np.sort(xyz[:, 2]), np.sort(depth[valid]), rtol=1e-6)
    v, u = np.nonzero(valid)
    np.testing.assert_allclose(xyz[:, 0], (u - 49.5) / 80.0 * depth[valid], rtol=1e-5, atol=1e-5)
    summary = json.loads((out / "street_depth.json").read_text())
    assert summary["scale_method"] == "canonical_focal"
    assert summary["scale"] == pytest.approx(80.0 * 64 / 100 / 40.0)
    assert summary["intrinsics"]["fx_px"] == 80.0
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_predict_at_model_resolution_with_torch(
    tiny_package_dir: Path, image_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    predict_image(
        image_path,
        out,
        model=tiny_package_dir,
        backend="torch",
        fx=80.0,
        output_resolution="model",
        backend_options={"model_factory": tiny_factory},
    )
    assert np.load(out / "street_depth.npy").shape == (32, 64)
    summary = json.loads((out / "street_depth.json").read_text())
    assert summary["backend"] == "torch" and summary["intrinsics"]["width"] == 64


def test_cityscapes_camera_json(tmp_path: Path) -> None:
    camera = {
        "extrinsic": {
            "baseline": 0.209,
            "pitch": 0.038,
            "roll": 0.0,
            "x": 1.7,
            "y": 0.1,
            "yaw": -0.02,
            "z": 1.22,
        },
        "intrinsic": {"fx": 2262.52, "fy": 2265.3, "u0": 1096.98, "v0": 513.137},
    }
    path = tmp_path / "camera.json"
    path.write_text(json.dumps(camera))
    intr, height, pitch = camera_from_args(2048, 1024, camera_json=path)
    assert intr == Intrinsics(2262.52, 2265.3, 1096.98, 513.137, 2048, 1024)
    assert (height, pitch) == (1.22, 0.038)
    # An image stored at half size: the calibration refers to 2048x1024.
    half, _, _ = camera_from_args(1024, 512, camera_json=path, calibration_size=(2048, 1024))
    assert half == intr.resized(1024, 512)
    with pytest.raises(InputError, match="either --camera-json or --fx"):
        camera_from_args(2048, 1024, camera_json=path, fx=100.0)
    path.write_text("{}")
    with pytest.raises(DatasetError):
        camera_from_args(2048, 1024, camera_json=path)


def test_default_principal_point_is_the_centre() -> None:
    intr, height, pitch = camera_from_args(100, 60, fx=80.0)
    assert intr == Intrinsics(80.0, 80.0, 49.5, 29.5, 100, 60)
    assert height is None and pitch is None


def test_predict_through_main(
    only_my_commands: None, tiny_package_dir: Path, image_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cli"
    argv = [
        "predict",
        "--image",
        str(image_path),
        "--model",
        str(tiny_package_dir),
        "--fx",
        "80",
        "--out",
        str(out),
        "--no-ply",
    ]
    assert cli_main.main(argv) == 0
    assert (out / "street_depth.npy").is_file() and not (out / "street.ply").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "the camera is unknown"),
        (["--fx", "80", "--backend", "openvino"], "unknown inference backend"),
    ],
)
def test_predict_errors_exit_2(
    only_my_commands: None,
    tiny_package_dir: Path,
    image_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    extra: list[str],
    message: str,
) -> None:
    argv = [
        "predict",
        "--image",
        str(image_path),
        "--model",
        str(tiny_package_dir),
        "--out",
        str(tmp_path / "o"),
        *extra,
    ]
    with caplog.at_level(logging.ERROR):
        assert cli_main.main(argv) == 2
    assert message in caplog.text


def test_predict_unreadable_image(tiny_package_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot be decoded"):
        predict_image(bad, tmp_path / "o", model=tiny_package_dir, fx=80.0)
    with pytest.raises(InputError, match="does not exist"):
        predict_image(tmp_path / "missing.png", tmp_path / "o", model=tiny_package_dir, fx=80.0)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_build_engine_without_tensorrt_exits_2(
    only_my_commands: None,
    tiny_package_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    argv = [
        "build-engine",
        "--model",
        str(tiny_package_dir),
        "--fp32",
        "--workspace-mb",
        "256",
        "--cache-dir",
        str(tmp_path),
    ]
    with caplog.at_level(logging.ERROR):
        assert cli_main.main(argv) == 2
    assert "TensorRT is not installed" in caplog.text
    assert not any(tmp_path.iterdir())
