"""Tests of training data: canonical targets under augmentation, cache, sampler, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from training_fixtures import toy_config, toy_sample

from cloudypoints_core.errors import ConfigError
from cloudypoints_core.training.config import AugmentConfig
from cloudypoints_core.training.data import (
    EpochSampler,
    SampleTransform,
    create_dataset,
    list_datasets,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _transform(
    augment: AugmentConfig | None, far: str = "clamp", fx: float = 40.0
) -> SampleTransform:
    config = toy_config(data={"far_targets": far})
    return SampleTransform(config.data, MEAN, STD, fx, (0.5, 100.0), augment=augment, seed=1)


def _unnormalise(image: np.ndarray) -> np.ndarray:
    return image.transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)


def test_plain_transform_resizes_and_scales_targets_to_the_canonical_camera() -> None:
    sample = toy_sample(3, width=128, height=64, fx=80.0)
    out = _transform(None)(sample)
    assert out["image"].shape == (3, 32, 64) and out["image"].dtype == np.float32
    assert out["target"].shape == out["mask"].shape == out["depth_m"].shape == (1, 32, 64)
    fx_in = 80.0 * 64 / 128
    assert out["fx_px"] == pytest.approx(fx_in)
    valid = out["mask"][0] & np.isfinite(out["depth_m"][0])
    np.testing.assert_allclose(
        out["target"][0][valid],
        np.minimum(out["depth_m"][0][valid] * 40.0 / fx_in, 100.0),
        rtol=1e-6,
    )
    # Sky (far mask) is a valid target at the head's maximum with far_targets: clamp ...
    sky = ~np.isfinite(out["depth_m"][0])
    assert sky.any() and out["mask"][0][sky].all() and (out["target"][0][sky] == 100.0).all()
    # ... and masked out with far_targets: ignore.
    ignored = _transform(None, far="ignore")(sample)
    assert not ignored["mask"][0][sky].any()


def test_augmentation_keeps_targets_consistent_with_intrinsics() -> None:
    """Whatever zoom, crop and flip are drawn, the target of a ground pixel must equal the
    canonical depth of the plane seen through the augmented camera."""
    aug = AugmentConfig(
        hflip_prob=0.5, scale_range=(1.0, 1.6), brightness=0.2, contrast=0.2, saturation=0.2
    )
    transform = _transform(aug)
    sample = toy_sample(5, width=64, height=32, fx=40.0)
    seen_zoom = seen_flip_shift = False
    for epoch in range(12):
        out = transform(sample, epoch=epoch, index=5)
        fx = float(out["fx_px"])
        seen_zoom |= fx > 41.0
        # The ground plane: depth = 1.5 * fy / (v - cy) for the augmented camera; estimate cy
        # from the targets themselves and check every ground row fits one plane.
        target = out["target"][0]
        depth = out["depth_m"][0]
        ground = np.isfinite(depth[:, 0])
        rows = np.nonzero(ground)[0]
        metric_rows = depth[rows, 0]
        np.testing.assert_allclose(
            target[rows, 0], np.minimum(metric_rows * 40.0 / fx, 100.0), rtol=1e-5
        )
        cy_est = rows - 1.5 * fx / metric_rows
        # Nearest-neighbour resampling moves a row by at most half a source pixel.
        assert np.ptp(cy_est) < 1.0 + fx / 40.0
        # Each row has one depth across the image: flips and crops keep rows intact.
        assert np.allclose(depth[rows], depth[rows, :1])
        seen_flip_shift |= not np.isclose(cy_est.mean(), sample["intrinsics"].cy_px, atol=0.6)
    assert seen_zoom and seen_flip_shift
    # Same (seed, epoch, index): same augmentation, whichever worker or run draws it.
    a = transform(sample, epoch=3, index=5)
    b = transform(sample, epoch=3, index=5)
    np.testing.assert_array_equal(a["image"], b["image"])
    c = transform(sample, epoch=4, index=5)
    assert not np.array_equal(a["image"], c["image"])


def test_horizontal_flip_mirrors_image_and_principal_point() -> None:
    aug = AugmentConfig(
        hflip_prob=1.0, scale_range=(1.0, 1.0), brightness=0.0, contrast=0.0, saturation=0.0
    )
    sample = toy_sample(2, width=64, height=32, fx=40.0)
    sample["rgb"][:, :10] = (255, 0, 0)
    flipped = _transform(aug)(sample)
    plain = _transform(None)(sample)
    np.testing.assert_allclose(flipped["image"], plain["image"][:, :, ::-1], atol=1e-5)
    assert _unnormalise(flipped["image"])[5, -1, 0] == pytest.approx(1.0, abs=1e-3)


def test_epoch_sampler_is_deterministic_sharded_and_resumable() -> None:
    full = EpochSampler(10, shuffle=True, seed=3)
    full.set_epoch(2)
    order = [i for i, _ in full]
    assert sorted(order) == list(range(10))
    full.set_epoch(2)
    assert [i for i, _ in full] == order
    full.set_epoch(3)
    assert [i for i, _ in full] != order
    assert all(e == 3 for _, e in full)
    # Two ranks: disjoint shards (after padding to a multiple of the world size) covering all.
    shards = []
    for rank in range(2):
        s = EpochSampler(9, shuffle=True, seed=3, rank=rank, world_size=2)
        s.set_epoch(1)
        shards.append([i for i, _ in s])
    assert len(shards[0]) == len(shards[1]) == 5
    assert set(shards[0]) | set(shards[1]) == set(range(9))
    # A resume offset skips exactly the samples already seen.
    s = EpochSampler(10, shuffle=True, seed=3, batch_size=4, drop_last=True)
    s.set_epoch(2)
    kept = [i for i, _ in s]
    assert kept == order[:8]
    s.set_epoch(2, start=4)
    assert [i for i, _ in s] == order[4:8] and len(s) == 4


def test_dataset_registry(tmp_path: Path) -> None:
    assert {"synthcity", "toy"} <= set(list_datasets())
    config = toy_config()
    with pytest.raises(ConfigError, match="unknown data set 'kitti'"):
        create_dataset("kitti", {}, split="train", data=config.data, cache_dir=tmp_path)


def test_synthcity_split_is_cached_and_reserves_test_seeds(tmp_path: Path) -> None:
    from cloudypoints_core.data.synthcity import render_frame

    config = toy_config()
    options = {
        "seed_start": 5,
        "seed_count": 2,
        "frames_per_seed": 2,
        "index_stride": 7,
        "width": 64,
        "height": 32,
    }
    data = create_dataset(
        "synthcity", options, split="train", data=config.data, cache_dir=tmp_path
    )
    assert len(data) == 4
    sample = data[3]
    frame = render_frame(6, 64, 32, index=7)
    np.testing.assert_array_equal(sample["rgb"], frame.rgb)
    np.testing.assert_array_equal(sample["depth_m"], frame.depth_m)
    assert sample["intrinsics"] == frame.intrinsics
    assert (sample["far_mask"] == np.isposinf(frame.depth_m)).all()
    assert (sample["seed"], sample["index"]) == (6, 7)
    folders = list((tmp_path / "synthcity").iterdir())
    assert len(folders) == 1 and (folders[0] / "complete").exists()
    # A second build reuses the cache (no new folder, same content).
    again = create_dataset(
        "synthcity", options, split="train", data=config.data, cache_dir=tmp_path
    )
    np.testing.assert_array_equal(again[3]["rgb"], frame.rgb)
    assert len(list((tmp_path / "synthcity").iterdir())) == 1
    with pytest.raises(ConfigError, match="reserved for the held-out test set"):
        create_dataset(
            "synthcity",
            {"seed_start": 999_999, "seed_count": 2},
            split="train",
            data=config.data,
            cache_dir=tmp_path,
        )
    with pytest.raises(ConfigError, match="unknown SynthCity options"):
        create_dataset(
            "synthcity",
            {"seed_start": 0, "seed_count": 1, "sedes": 3},
            split="val",
            data=config.data,
            cache_dir=tmp_path,
        )
