"""``cloudypoints predict``: metric depth, a colourised picture and a PLY cloud of one image."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import InputError
from cloudypoints_core.geometry import Intrinsics, resize_image
from cloudypoints_core.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)


def read_rgb_image(path: str | Path) -> npt.NDArray[np.uint8]:
    """An image file as (H, W, 3) uint8 RGB (gray and RGBA are converted; 16-bit is scaled)."""
    cv2 = require("cv2", "reading images")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"image {path} cannot be decoded (corrupt or not an image format)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def camera_from_args(
    width: int,
    height: int,
    *,
    fx: float | None = None,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    camera_json: str | Path | None = None,
    calibration_size: tuple[int, int] | None = None,
) -> tuple[Intrinsics, float | None, float | None]:
    """(intrinsics of the image, camera height m or None, pitch rad or None) from the options.

    A Cityscapes ``camera.json`` gives intrinsics (at ``calibration_size``, default the image's
    size) plus mounting height and pitch. Otherwise ``fx`` is required; ``fy`` defaults to ``fx``
    and the principal point to the image centre ((W - 1) / 2, (H - 1) / 2), with a warning.
    """
    if camera_json is not None:
        if fx is not None:
            raise InputError("give either --camera-json or --fx, not both")
        from cloudypoints_core.data.cityscapes import CityscapesCamera

        camera = CityscapesCamera.from_json(camera_json)
        intr = camera.intrinsics(width, height, calibration_size)
        return intr, camera.height_m, camera.pitch_rad
    if fx is None:
        raise InputError(
            "the camera is unknown: give --fx (and optionally --fy, --cx, --cy) in pixels of this "
            "image, or --camera-json with a Cityscapes camera file"
        )
    if cx is None or cy is None:
        log.warning("principal point not given; assuming the image centre")
    return (
        Intrinsics(
            fx_px=float(fx),
            fy_px=float(fy if fy is not None else fx),
            cx_px=float(cx if cx is not None else (width - 1) / 2.0),
            cy_px=float(cy if cy is not None else (height - 1) / 2.0),
            width=width,
            height=height,
        ),
        None,
        None,
    )


def predict_image(
    image: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    backend: str = "auto",
    device: str = "cpu",
    fx: float | None = None,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    camera_json: str | Path | None = None,
    calibration_size: tuple[int, int] | None = None,
    camera_height_m: float | None = None,
    camera_pitch_rad: float | None = None,
    fixed_scale: float | None = None,
    output_resolution: str = "input",
    write_cloud: bool = True,
    stride: int = 1,
    backend_options: dict[str, Any] | None = None,
) -> int:
    """Run the model on ``image`` and write into ``out_dir``; returns the exit code (0).

    Files (``<stem>`` is the image's name without suffix): ``<stem>_depth.npy`` (float32 metres,
    NaN invalid), ``<stem>_depth.png`` (colourised, near warm, invalid black), ``<stem>.ply``
    (coloured points in the camera optical frame, metres) and ``<stem>_depth.json``
    (intrinsics of the depth image, scale method, timings).
    """
    from cloudypoints_core.image import colorize_depth
    from cloudypoints_core.inference.facade import DepthEstimator

    rgb = read_rgb_image(image)
    height, width = rgb.shape[:2]
    intr, json_height, json_pitch = camera_from_args(
        width,
        height,
        fx=fx,
        fy=fy,
        cx=cx,
        cy=cy,
        camera_json=camera_json,
        calibration_size=calibration_size,
    )
    options: dict[str, Any] = dict(backend_options or {})
    if fixed_scale is not None:
        options["fixed_scale"] = fixed_scale
    with DepthEstimator.from_package(
        model, backend=backend, device=device, **options
    ) as estimator:
        result = estimator.predict(
            rgb,
            intr,
            output_resolution=output_resolution,
            camera_height_m=camera_height_m if camera_height_m is not None else json_height,
            camera_pitch_rad=camera_pitch_rad if camera_pitch_rad is not None else json_pitch,
        )
        spec = estimator.spec
    depth = result.depth_m
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(image).stem
    with atomic_path(out / f"{stem}_depth.npy") as tmp:
        np.save(tmp, depth)
    cv2 = require("cv2", "writing PNG images")
    picture = colorize_depth(depth, spec.min_depth_m, min(spec.max_depth_m, _far_limit(depth)))
    with atomic_path(out / f"{stem}_depth.png") as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(picture[:, :, ::-1])):
            raise InputError(f"cannot write {out / f'{stem}_depth.png'}")
    n_points = 0
    if write_cloud:
        from cloudypoints_core.geometry import backproject
        from cloudypoints_core.pointcloud import write_ply

        colour = rgb
        if result.intrinsics.shape != intr.shape:
            colour, _ = resize_image(
                rgb, intr, result.intrinsics.width, result.intrinsics.height, "area"
            )
        points = backproject(depth, result.intrinsics, stride=stride, organised=False, rgb=colour)
        n_points = len(points)
        write_ply(out / f"{stem}.ply", points.xyz, points.rgb)
    valid = np.isfinite(depth)
    valid_fraction = float(valid.mean())
    median_m = float(np.median(depth[valid])) if valid.any() else None
    summary = {
        "image": str(image),
        "model": spec.name,
        "backend": result.backend,
        "device": result.device,
        "scale_method": result.scale_method,
        "scale": result.scale,
        "intrinsics": result.intrinsics.to_dict(),
        "valid_fraction": valid_fraction,
        "median_depth_m": median_m,
        "points": n_points,
        "timings_ms": dict(result.timings),
    }
    atomic_write_text(out / f"{stem}_depth.json", json.dumps(summary, indent=2) + "\n")
    log.info(
        "%s: depth %dx%d (%.0f%% valid, median %s m, scale %s=%.4g) via %s on %s in %.1f ms -> %s",
        image,
        depth.shape[1],
        depth.shape[0],
        100.0 * valid_fraction,
        "n/a" if median_m is None else f"{median_m:.2f}",
        result.scale_method,
        result.scale,
        result.backend,
        result.device,
        result.timings["total"],
        out,
    )
    return 0


def _far_limit(depth: npt.NDArray[np.float32]) -> float:
    """The 98th percentile of valid depth: a colour scale that a few far pixels do not flatten."""
    valid = depth[np.isfinite(depth)]
    return float(np.percentile(valid, 98)) if valid.size else math.inf


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    return w, h


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="depth (.npy, .png) and a PLY point cloud for one image",
        description=(
            "Estimate metric depth for one image and write <stem>_depth.npy (float32 metres, "
            "NaN invalid), <stem>_depth.png (colourised), <stem>.ply and <stem>_depth.json."
        ),
    )
    parser.add_argument("--image", required=True, help="input image (PNG, JPEG, ...)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", default=None, help="model package folder (default: bundled)")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime, torch or tensorrt")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    cam = parser.add_argument_group("camera (pixels of this image)")
    cam.add_argument("--fx", type=float, help="focal length x (px)")
    cam.add_argument("--fy", type=float, help="focal length y (px; default fx)")
    cam.add_argument("--cx", type=float, help="principal point x (px; default image centre)")
    cam.add_argument("--cy", type=float, help="principal point y (px; default image centre)")
    cam.add_argument("--camera-json", help="Cityscapes camera JSON (intrinsics, height, pitch)")
    cam.add_argument(
        "--calibration-size",
        type=_size,
        help="WIDTHxHEIGHT the camera JSON refers to, if the image was resized (e.g. 2048x1024)",
    )
    scale = parser.add_argument_group("scale (relative models only)")
    scale.add_argument("--camera-height", type=float, help="camera height above the road (m)")
    scale.add_argument("--camera-pitch", type=float, help="camera pitch, positive down (rad)")
    scale.add_argument("--fixed-scale", type=float, help="metres per unit relative depth fallback")
    parser.add_argument(
        "--output-resolution", choices=("input", "model"), default="input", help="depth size"
    )
    parser.add_argument("--stride", type=int, default=1, help="keep every N-th pixel in the PLY")
    parser.add_argument("--no-ply", action="store_true", help="skip the point cloud")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return predict_image(
        args.image,
        args.out,
        model=args.model,
        backend=args.backend,
        device=args.device,
        fx=args.fx,
        fy=args.fy,
        cx=args.cx,
        cy=args.cy,
        camera_json=args.camera_json,
        calibration_size=args.calibration_size,
        camera_height_m=args.camera_height,
        camera_pitch_rad=args.camera_pitch,
        fixed_scale=args.fixed_scale,
        output_resolution=args.output_resolution,
        write_cloud=not args.no_ply,
        stride=args.stride,
    )
