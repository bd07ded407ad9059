"""TensorRT engine cache: keys, paths, hits, misses, invalidation, corruption, unwritable folders.

Everything here is pure Python with fake GPU information; the real build and run are at the end,
marked and skipped without TensorRT and a GPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from inference_fixtures import make_tiny_package

from cloudypoints_core.errors import ConfigError, DependencyError
from cloudypoints_core.inference.backends.engine_cache import (
    EngineBuildOptions,
    EngineCache,
    EngineKey,
    GpuInfo,
    default_cache_dir,
)
from cloudypoints_core.inference.backends.tensorrt_backend import engine_key
from cloudypoints_core.inference.package import ModelPackage, load_model_package

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
ORIN = GpuInfo("Orin", (8, 7))
SHA = "ab" * 32


def make_key(**changes: object) -> EngineKey:
    base = EngineKey(
        model_name="tiny",
        onnx_sha256=SHA,
        tensorrt_version="10.3.0",
        gpu=ORIN,
        options=EngineBuildOptions(),
        input_shape=(1, 3, 32, 64),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class Builder:
    """Counts builds and returns distinct engine bytes each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"engine-{self.calls}".encode() * 100


# ------------------------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "cd" * 32},
        {"tensorrt_version": "10.4.0"},
        {"gpu": GpuInfo("RTX 4090", (8, 7))},
        {"gpu": GpuInfo("Orin", (8, 6))},
        {"options": EngineBuildOptions(precision="fp32")},
        {"options": EngineBuildOptions(workspace_mb=2048)},
        {"input_shape": (1, 3, 64, 128)},
    ],
)
def test_every_dependency_changes_the_key(change: dict[str, object]) -> None:
    assert make_key(**change).digest() != make_key().digest()


def test_key_is_stable_and_ignores_the_label() -> None:
    assert make_key().digest() == make_key().digest()
    assert make_key(model_name="renamed").digest() == make_key().digest()
    assert make_key(source="/moved/model.onnx").digest() == make_key().digest()
    # The digest is the sha256 of canonical JSON; recompute it independently.
    data = make_key().to_dict()
    del data["model_name"], data["source"]
    expected = hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert make_key().digest() == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"precision": "int8"},
        {"workspace_mb": 0},
        {"workspace_mb": 8},
        {"workspace_mb": 10**9},
        {"workspace_mb": 512.0},
        {"workspace_mb": True},
    ],
)
def test_bad_build_options(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        EngineBuildOptions(**kwargs)  # type: ignore[arg-type]


def test_bad_key_fields() -> None:
    with pytest.raises(ConfigError, match="64 hex digits"):
        make_key(onnx_sha256="xyz")
    with pytest.raises(ConfigError, match="tensorrt_version"):
        make_key(tensorrt_version="")


def test_engine_key_from_a_package_hashes_its_onnx(tmp_path: Path) -> None:
    first = load_model_package(make_tiny_package(tmp_path / "a", seed=0))
    second = load_model_package(make_tiny_package(tmp_path / "b", seed=1))
    key = engine_key(first, "10.3.0", ORIN, EngineBuildOptions())
    onnx_bytes = first.onnx_path.read_bytes()  # type: ignore[union-attr]
    assert key.onnx_sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    assert key.input_shape == (1, 3, 32, 64)
    # Retrained weights: another ONNX file, another key.
    assert engine_key(second, "10.3.0", ORIN, EngineBuildOptions()).digest() != key.digest()


# ------------------------------------------------------------------------------------ paths
def test_default_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_cache_dir({"CLOUDYPOINTS_ENGINE_CACHE": str(tmp_path / "x")}) == tmp_path / "x"
    assert (
        default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)})
        == tmp_path / "cloudypoints" / "engines"
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "cloudypoints" / "engines"
    assert default_cache_dir({}) == expected
    # Relative XDG values are invalid per the spec and ignored.
    assert default_cache_dir({"XDG_CACHE_HOME": "relative/dir"}) == expected
    assert EngineCache().directory == default_cache_dir()


def test_engine_file_names_are_labelled_and_safe(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    path = cache.engine_path(make_key(model_name="../evil name"))
    assert path.parent == tmp_path
    assert path.name.endswith(".engine") and "/" not in path.name and " " not in path.name
    assert make_key().digest()[:20] in path.name


# ------------------------------------------------------------------------- hits and misses
def test_miss_then_hit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path / "cache")
    build = Builder()
    with caplog.at_level(logging.INFO):
        data, hit = cache.get_or_build(make_key(), build)
        again, hit_again = cache.get_or_build(make_key(), build)
    assert (hit, hit_again) == (False, True)
    assert again == data and build.calls == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "engine cache miss" in messages and "engine cache hit" in messages
    # A fresh cache object (another process) sees the entry too.
    assert EngineCache(tmp_path / "cache").load(make_key()) == data


def test_rebuild_forces_a_build(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    build = Builder()
    cache.get_or_build(make_key(), build)
    data, hit = cache.get_or_build(make_key(), build, rebuild=True)
    assert not hit and build.calls == 2
    assert cache.load(make_key()) == data


def test_new_model_rebuilds_and_removes_the_superseded_engine(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    build = Builder()
    cache.get_or_build(make_key(), build)
    old_path = cache.engine_path(make_key())
    fp32 = make_key(options=EngineBuildOptions(precision="fp32"))
    cache.get_or_build(fp32, build)  # another build option: a sibling, not a successor
    newer = make_key(onnx_sha256="cd" * 32)
    _, hit = cache.get_or_build(newer, build)
    assert not hit and build.calls == 3
    assert not old_path.exists() and not old_path.with_suffix(".json").exists()
    assert cache.engine_path(fp32).exists() and cache.engine_path(newer).exists()
    assert len(cache.entries()) == 2


def test_same_named_models_from_two_files_coexist(tmp_path: Path) -> None:
    # Two packages trained from one config share spec.name; only the file says which is which.
    cache = EngineCache(tmp_path)
    build = Builder()
    a = make_key(source="/runs/a/model.onnx")
    b = make_key(source="/runs/b/model.onnx", onnx_sha256="cd" * 32)
    for key in (a, b, a, b):
        cache.get_or_build(key, build)
    assert build.calls == 2 and len(cache.entries()) == 2


def test_an_entry_of_the_old_layout_goes_when_its_model_rebuilds(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    old = tmp_path / "tiny-0123456789abcdef0123.engine"
    old.write_bytes(b"old engine")
    legacy = {k: v for k, v in make_key().to_dict().items() if k != "source"}
    legacy["format"] = 1
    old.with_suffix(".json").write_text(json.dumps({"key": legacy, "digest": "0" * 64}))
    cache.get_or_build(make_key(source="/runs/a/model.onnx"), Builder())
    assert not old.exists() and not old.with_suffix(".json").exists()
    assert len(cache.entries()) == 1


def test_tensorrt_upgrade_invalidates(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    build = Builder()
    cache.get_or_build(make_key(), build)
    _, hit = cache.get_or_build(make_key(tensorrt_version="10.5.0"), build)
    assert not hit and build.calls == 2


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.get_or_build(make_key(), Builder())
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".engine", ".json"]


# ------------------------------------------------------------------------------ corruption
def test_truncated_engine_is_detected_removed_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EngineCache(tmp_path)
    build = Builder()
    data, _ = cache.get_or_build(make_key(), build)
    path = cache.engine_path(make_key())
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        assert cache.load(make_key()) is None
    assert "corrupt" in caplog.text
    assert not path.exists()
    _, hit = cache.get_or_build(make_key(), build)
    assert not hit and build.calls == 2


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    data, _ = cache.get_or_build(make_key(), Builder())
    path = cache.engine_path(make_key())
    corrupted = bytearray(data)
    corrupted[10] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    assert cache.load(make_key()) is None


@pytest.mark.parametrize("sidecar", ["{not json", "[]", '{"key": {}, "digest": "x"}', None])
def test_bad_or_missing_sidecar_means_no_entry(tmp_path: Path, sidecar: str | None) -> None:
    cache = EngineCache(tmp_path)
    cache.get_or_build(make_key(), Builder())
    meta = cache.meta_path(make_key())
    if sidecar is None:
        meta.unlink()  # an interrupted store: engine written, sidecar not
    else:
        meta.write_text(sidecar)
    assert cache.load(make_key()) is None


def test_unwritable_cache_keeps_the_engine_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cache = EngineCache(blocker / "engines")  # cannot be created: its parent is a file
    build = Builder()
    with caplog.at_level(logging.WARNING):
        data, hit = cache.get_or_build(make_key(), build)
    assert data == b"engine-1" * 100
    assert not hit
    assert "in memory only" in caplog.text
    assert cache.store(make_key(), b"x") is None


def test_empty_build_is_an_error(tmp_path: Path) -> None:
    from cloudypoints_core.errors import BackendError

    with pytest.raises(BackendError, match="returned no data"):
        EngineCache(tmp_path).get_or_build(make_key(), lambda: b"")


# ------------------------------------------------------------------------ real TensorRT
@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_building_without_tensorrt_says_so(tiny_package: ModelPackage) -> None:
    from cloudypoints_core.inference.backends.tensorrt_backend import build_cached_engine

    with pytest.raises(DependencyError, match="TensorRT is not installed"):
        build_cached_engine(tiny_package)


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT 10 and a CUDA GPU")
def test_tensorrt_engine_matches_onnxruntime(tiny_package: ModelPackage, tmp_path: Path) -> None:
    from cloudypoints_core.inference.backends import EnvironmentProbe, create_backend

    if EnvironmentProbe().cuda_device_count() == 0:
        pytest.skip("needs a CUDA GPU")
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 64)).astype(np.float32)
    reference = create_backend("onnxruntime", tiny_package).infer(batch).copy()
    trt = create_backend(
        "tensorrt", tiny_package, "cuda", {"precision": "fp32", "cache_dir": str(tmp_path)}
    )
    np.testing.assert_allclose(trt.infer(batch), reference, rtol=1e-3, atol=1e-3)
    trt.close()
    # The second start loads the cached engine.
    again = create_backend(
        "tensorrt", tiny_package, "cuda", {"precision": "fp32", "cache_dir": str(tmp_path)}
    )
    np.testing.assert_allclose(again.infer(batch), reference, rtol=1e-3, atol=1e-3)
    assert len(EngineCache(tmp_path).entries()) == 1
