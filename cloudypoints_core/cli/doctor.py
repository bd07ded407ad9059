"""``cloudypoints doctor``: what this machine can run, in a form to paste into bug reports.

It reports the inference libraries (importable, versions, ONNX Runtime's providers, whether
torch is a CUDA build), the GPUs and which library saw them, the backend ``auto`` would pick,
the TensorRT engine cache (folder and entries), and the ROS middleware settings (RMW, rclpy,
the Fast DDS profile). It never imports rclpy (the core stays free of ROS): rclpy is only
looked up. Every check catches its own failure, so a broken install shows up as a line, not as a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

#: Distributions that may provide a module, first installed one wins (for the version shown).
_DISTRIBUTIONS = {
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "torch": ("torch",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
    "cuda": ("cuda-bindings", "cuda-python"),
    "onnx": ("onnx",),
}

#: The RMW ROS 2 Kilted uses when RMW_IMPLEMENTATION is unset.
DEFAULT_RMW = "rmw_fastrtps_cpp"


def _dist_version(module: str) -> str | None:
    for dist in _DISTRIBUTIONS.get(module, (module,)):
        try:
            return f"{importlib.metadata.version(dist)} ({dist})"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _guard(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a broken install is a finding, not a crash
        return {"importable": False, "error": f"{type(exc).__name__}: {exc}"}


def _library(module: str, details: Callable[[Any], dict[str, Any]] | None = None) -> Any:
    def check() -> dict[str, Any]:
        if importlib.util.find_spec(module) is None:
            return {"importable": False, "error": "not installed"}
        mod = importlib.import_module(module)
        info: dict[str, Any] = {
            "importable": True,
            "version": str(getattr(mod, "__version__", "") or _dist_version(module) or "?"),
        }
        if details is not None:
            info.update(details(mod))
        return info

    return _guard(check)


def _torch_details(torch: Any) -> dict[str, Any]:
    return {"cuda_build": torch.version.cuda}


def _onnxruntime_details(ort: Any) -> dict[str, Any]:
    return {"providers": list(ort.get_available_providers())}


def _cuda_bindings() -> dict[str, Any]:
    def check() -> dict[str, Any]:
        from cloudypoints_core.inference.backends.cuda_api import _import_cudart

        if importlib.util.find_spec("cuda") is None:
            return {"importable": False, "error": "not installed"}
        _import_cudart()
        return {"importable": True, "version": _dist_version("cuda") or "?"}

    return _guard(check)


def _gpus() -> dict[str, Any]:
    from cloudypoints_core.inference.backends import EnvironmentProbe

    found = EnvironmentProbe().gpus()
    return {
        "count": found.count,
        "via": found.via,
        "devices": [
            {
                "index": i,
                "name": gpu.name,
                "compute_capability": ".".join(map(str, gpu.compute_capability)),
            }
            for i, gpu in enumerate(found.gpus)
        ],
        "notes": list(found.notes),
    }


def _auto_selection(model: str | None, gpus: Mapping[str, Any]) -> dict[str, Any]:
    from cloudypoints_core.inference.backends import EnvironmentProbe, backend_candidates
    from cloudypoints_core.inference.package import load_model_package

    class Known(EnvironmentProbe):
        """The probe with the GPU count already found (so the report is consistent)."""

        def cuda_device_count(self) -> int:
            return int(gpus.get("count", 0))

    package = load_model_package(model)
    found, skipped = backend_candidates(package, "auto", Known())
    return {
        "model": str(package.root),
        "order": [f"{s.backend} on {s.device}" for s in found],
        "reason": found[0].reason if found else "no backend can run the model",
        "skipped": skipped,
    }


def _engine_cache(cache_dir: str | Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    from cloudypoints_core.inference.backends.engine_cache import EngineCache, default_cache_dir

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(environ)
    entries = []
    for entry in EngineCache(folder).entries():
        key = entry["key"]
        gpu = dict(key.get("gpu") or {})
        gpu["cc"] = gpu.get("compute_capability", [])
        entries.append(
            {
                "file": Path(entry["path"]).name,
                "model": key.get("model_name"),
                "tensorrt": key.get("tensorrt_version"),
                "gpu": f"{gpu.get('name')} (sm {'.'.join(map(str, gpu.get('cc', [])))})",
                "precision": (key.get("options") or {}).get("precision"),
                "size_mib": round(int(entry.get("size", 0)) / 2**20, 1),
                "source": key.get("source", ""),
            }
        )
    return {
        "folder": str(folder),
        "exists": folder.is_dir(),
        "CLOUDYPOINTS_ENGINE_CACHE": environ.get("CLOUDYPOINTS_ENGINE_CACHE"),
        "entries": entries,
    }


def _ros(environ: Mapping[str, str]) -> dict[str, Any]:
    profile = environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
    rmw = environ.get("RMW_IMPLEMENTATION")
    try:
        rclpy_found = importlib.util.find_spec("rclpy") is not None
    except (ImportError, ValueError):
        rclpy_found = False
    return {
        "ROS_DISTRO": environ.get("ROS_DISTRO"),
        "RMW_IMPLEMENTATION": rmw,
        "rmw_in_use": rmw or f"{DEFAULT_RMW} (default)",
        "rclpy_importable": rclpy_found,
        "ROS_DOMAIN_ID": environ.get("ROS_DOMAIN_ID"),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"),
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        "fastdds_profile_exists": bool(profile) and Path(str(profile)).is_file(),
    }


def collect(
    *,
    environ: Mapping[str, str] | None = None,
    cache_dir: str | Path | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-serialisable data."""
    from cloudypoints_core import __version__

    env = os.environ if environ is None else environ
    gpus = _guard(_gpus)
    return {
        "cloudypoints": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "libraries": {
            "onnxruntime": _library("onnxruntime", _onnxruntime_details),
            "torch": _library("torch", _torch_details),
            "tensorrt": _library("tensorrt"),
            "cuda-bindings": _cuda_bindings(),
            "onnx": _library("onnx"),
            # Optional: compiled back-projection of unorganised clouds (about 2.5x faster).
            "numba": _library("numba"),
        },
        "gpus": gpus,
        "CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES"),
        "auto": _guard(lambda: _auto_selection(model, gpus)),
        "engine_cache": _guard(lambda: _engine_cache(cache_dir, env)),
        "ros": _ros(env),
    }


def _library_line(name: str, info: Mapping[str, Any]) -> str:
    if not info.get("importable"):
        return f"  {name:<14} no ({info.get('error', 'not installed')})"
    extra = ""
    if "providers" in info:
        extra = f"  providers: {', '.join(info['providers'])}"
    if "cuda_build" in info:
        extra = f"  CUDA build: {info['cuda_build'] or 'no (CPU-only)'}"
    return f"  {name:<14} {info.get('version', '?')}{extra}"


def format_report(report: Mapping[str, Any]) -> str:
    """The report as aligned text (stable order, no timestamps, so two reports diff cleanly)."""
    lines = [
        f"cloudypoints {report['cloudypoints']} doctor",
        f"python {report['python']} on {report['platform']}",
        "",
        "libraries:",
    ]
    lines += [_library_line(n, i) for n, i in report["libraries"].items()]
    gpus = report["gpus"]
    lines += ["", f"GPUs: {gpus.get('count', 0)} (seen by: {gpus.get('via', 'none')})"]
    visible = report.get("CUDA_VISIBLE_DEVICES")
    lines.append(f"  CUDA_VISIBLE_DEVICES {visible if visible is not None else '(unset)'}")
    for dev in gpus.get("devices", []):
        lines.append(f"  cuda:{dev['index']}  {dev['name']}  sm {dev['compute_capability']}")
    if "error" in gpus:
        lines.append(f"  discovery failed: {gpus['error']}")
    lines += [f"  - {note}" for note in gpus.get("notes", [])]
    auto = report["auto"]
    lines += ["", "auto backend (device auto):"]
    if "error" in auto:
        lines.append(f"  cannot tell: {auto['error']}")
    else:
        lines.append(f"  model {auto['model']}")
        lines.append(f"  order: {' > '.join(auto['order']) or '(none)'}")
        lines += [f"  skipped: {s}" for s in auto["skipped"]]
    cache = report["engine_cache"]
    lines += [""]
    if "error" in cache:
        lines.append(f"engine cache: cannot read ({cache['error']})")
    else:
        state = "" if cache["exists"] else " (does not exist yet)"
        lines.append(f"engine cache: {cache['folder']}{state}")
        if cache["exists"] and not cache["entries"]:
            lines.append("  (empty)")
        for e in cache["entries"]:
            lines.append(
                f"  {e['file']}  {e['model']}  TensorRT {e['tensorrt']}  {e['gpu']}  "
                f"{e['precision']}  {e['size_mib']} MiB"
            )
    ros = report["ros"]
    profile = ros["FASTDDS_DEFAULT_PROFILES_FILE"]
    lines += [
        "",
        "ROS:",
        f"  ROS_DISTRO                     {ros['ROS_DISTRO'] or '(unset)'}",
        f"  RMW_IMPLEMENTATION             {ros['RMW_IMPLEMENTATION'] or '(unset)'}"
        + ("" if ros["RMW_IMPLEMENTATION"] else f" -> {ros['rmw_in_use']}"),
        f"  rclpy                          {'importable' if ros['rclpy_importable'] else 'no'}",
        f"  ROS_DOMAIN_ID                  {ros['ROS_DOMAIN_ID'] or '(unset: 0)'}",
        f"  ROS_AUTOMATIC_DISCOVERY_RANGE  {ros['ROS_AUTOMATIC_DISCOVERY_RANGE'] or '(unset)'}",
        "  FASTDDS_DEFAULT_PROFILES_FILE  "
        + (
            f"{profile} ({'exists' if ros['fastdds_profile_exists'] else 'MISSING'})"
            if profile
            else "(unset: Fast DDS built-in defaults)"
        ),
    ]
    return "\n".join(lines) + "\n"


def doctor(
    *,
    as_json: bool = False,
    cache_dir: str | Path | None = None,
    model: str | None = None,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Write the report (text or JSON) to ``stream`` (stdout); exit code 0."""
    report = collect(environ=environ, cache_dir=cache_dir, model=model)
    out = stream if stream is not None else sys.stdout
    if as_json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        out.write(format_report(report))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="show what this machine can run (backends, GPUs, engine cache, ROS middleware)",
        description=(
            "Report the inference libraries and their versions, the GPUs and which library saw "
            "them, the backend 'auto' would choose, the TensorRT engine cache and the ROS "
            "middleware settings. Paste the output into bug reports."
        ),
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON")
    parser.add_argument("--cache-dir", default=None, help="engine cache folder to list")
    parser.add_argument("--model", default=None, help="model package for the auto line")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return doctor(as_json=args.json, cache_dir=args.cache_dir, model=args.model)
