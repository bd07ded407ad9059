"""Training data: a data set registry, the SynthCity sample cache, augmentation and sampling.

Sample-dict schema (what every registered data set returns from ``__getitem__``):

- ``"rgb"``: (H, W, 3) uint8 RGB image
- ``"depth_m"``: (H, W) float32 metric z-depth (metres) aligned with ``rgb``; NaN, +-inf and
  values <= 0 are invalid (no ground truth)
- ``"intrinsics"``: :class:`~cloudypoints_core.geometry.Intrinsics` of ``rgb``
- optional ``"far_mask"``: (H, W) bool, pixels known to lie beyond any depth range (SynthCity's
  sky); with ``data.far_targets: clamp`` they are trained as the head's maximum depth
- optional ``"aux_depth_m"``: (H, W) float32, a second supervision source aligned with ``rgb``
  (e.g. LiDAR projected to the camera: sparse, NaN or 0 where empty), trained with weight
  ``optim.aux_weight`` beside ``depth_m`` (weight ``optim.depth_weight``) and scored as the
  ``aux_*`` metrics; a data set provides it for every sample or for none
- optional identifiers (``"seed"``, ``"index"``, ``"name"``...) are carried along untouched

A data set is any object with ``__len__`` and ``__getitem__`` returning such dicts. It is made by
a factory registered under a name: ``factory(options, *, split, data, cache_dir)`` where
``options`` is the ``data.train`` / ``data.val`` / ``data.test`` mapping of the config, ``split``
is ``"train"``, ``"val"`` or ``"test"``, ``data`` the whole :class:`DataConfig`. Register one
with :func:`register_dataset` (a callable or a lazy ``"module:function"`` target).

SynthCity seeds >= :data:`TEST_SEED_MIN` are reserved for testing: the ``train`` and ``val``
splits refuse them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import ConfigError, DatasetError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.training.config import AugmentConfig, DataConfig

__all__ = [
    "TEST_SEED_MIN",
    "EpochSampler",
    "SampleTransform",
    "cache_root",
    "create_dataset",
    "list_datasets",
    "register_dataset",
]

log = logging.getLogger(__name__)

#: SynthCity seeds from here on are the held-out test set: never used for training or validation.
TEST_SEED_MIN = 1_000_000

DatasetFactory = Callable[..., Any]
_DATASETS: dict[str, DatasetFactory | str] = {
    "synthcity": "cloudypoints_core.training.data:synthcity_dataset",
    "cityscapes": "cloudypoints_core.data.cityscapes:training_dataset",
    "distill": "cloudypoints_core.training.distill:distill_dataset",
}


def register_dataset(name: str, factory: DatasetFactory | str) -> None:
    """Register ``factory`` (callable or ``"module:function"``) as data set ``name``."""
    if not name:
        raise ConfigError("a data set needs a non-empty name")
    if isinstance(factory, str) and ":" not in factory:
        raise ConfigError(f"data set target {factory!r} must look like 'module:function'")
    _DATASETS[name] = factory


def list_datasets() -> list[str]:
    """Names of the registered data sets."""
    return sorted(_DATASETS)


def create_dataset(
    name: str, options: Mapping[str, Any], *, split: str, data: DataConfig, cache_dir: Path
) -> Any:
    """The ``split`` data set of ``name`` built from ``options``."""
    try:
        factory = _DATASETS[name]
    except KeyError as exc:
        raise ConfigError(f"unknown data set {name!r}; registered: {list_datasets()}") from exc
    if isinstance(factory, str):
        module, _, func = factory.partition(":")
        factory = getattr(importlib.import_module(module), func)
    dataset = factory(dict(options), split=split, data=data, cache_dir=cache_dir)
    if len(dataset) == 0:
        raise DatasetError(f"data set {name!r} split {split!r} is empty (options {dict(options)})")
    return dataset


def cache_root(data: DataConfig) -> Path:
    """Cache folder: ``data.cache_dir``, else $CLOUDYPOINTS_CACHE, else ~/.cache/cloudypoints."""
    if data.cache_dir:
        return Path(data.cache_dir).expanduser()
    env = os.environ.get("CLOUDYPOINTS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloudypoints"


# ------------------------------------------------------------------------------------ SynthCity
_SYNTHCITY_KEYS = frozenset(
    {
        "seed_start",
        "seed_count",
        "seeds",
        "frames_per_seed",
        "index_stride",
        "width",
        "height",
        "synthcity_config",
        "cache",
    }
)


@dataclass(frozen=True)
class ArraySamples:
    """Samples held in (memory-mapped) arrays: the SynthCity cache, or any pre-decoded set."""

    rgb: npt.NDArray[np.uint8]  # (N, H, W, 3)
    depth_m: npt.NDArray[np.float32]  # (N, H, W), inf = sky
    intrinsics: npt.NDArray[np.float64]  # (N, 4): fx, fy, cx, cy
    ids: npt.NDArray[np.int64]  # (N, 2): seed, frame index

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"sample {k} out of range for {len(self)} samples")
        depth = np.asarray(self.depth_m[k], dtype=np.float32)
        fx, fy, cx, cy = (float(v) for v in self.intrinsics[k])
        height, width = depth.shape
        return {
            "rgb": np.asarray(self.rgb[k]),
            "depth_m": depth,
            "far_mask": np.isposinf(depth),
            "intrinsics": Intrinsics(fx, fy, cx, cy, width, height),
            "seed": int(self.ids[k, 0]),
            "index": int(self.ids[k, 1]),
        }


def _synthcity_source_hash() -> str:
    """Hash of the generator's source: a changed generator must not reuse stale cached frames."""
    folder = Path(__file__).resolve().parent.parent / "data"
    digest = hashlib.sha256()
    for path in sorted(folder.glob("synthcity*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _seed_list(options: Mapping[str, Any], split: str) -> list[int]:
    if "seeds" in options:
        seeds = options["seeds"]
        if not isinstance(seeds, (list, tuple)) or not seeds:
            raise ConfigError(
                f"data.{split}.seeds must be a non-empty list of ints, got {seeds!r}"
            )
        out = [int(s) for s in seeds]
    else:
        try:
            start = int(options["seed_start"])
            count = int(options["seed_count"])
        except KeyError as exc:
            raise ConfigError(
                f"data.{split} needs 'seeds' or both 'seed_start' and 'seed_count' (got "
                f"{sorted(options)})"
            ) from exc
        if count < 1 or start < 0:
            raise ConfigError(f"data.{split}: need seed_start >= 0 and seed_count >= 1")
        out = list(range(start, start + count))
    if split in ("train", "val") and max(out) >= TEST_SEED_MIN:
        raise ConfigError(
            f"data.{split} uses SynthCity seed {max(out)}; seeds >= {TEST_SEED_MIN} are reserved "
            "for the held-out test set"
        )
    return out


def synthcity_dataset(
    options: dict[str, Any], *, split: str, data: DataConfig, cache_dir: Path
) -> Any:
    """SynthCity frames of the seeds in ``options``, rendered once into an on-disk cache.

    Options: ``seed_start`` + ``seed_count`` (or ``seeds``), ``frames_per_seed`` (1),
    ``index_stride`` (10 frames between samples of one seed's drive), ``width``/``height``
    (render size; default the input size), ``synthcity_config`` (SynthCityConfig fields),
    ``cache`` (true; false renders on every access).
    """
    unknown = sorted(set(options) - _SYNTHCITY_KEYS)
    if unknown:
        raise ConfigError(
            f"data.{split}: unknown SynthCity options {unknown}; known: {sorted(_SYNTHCITY_KEYS)}"
        )
    from cloudypoints_core.data.synthcity import SynthCityConfig, SynthCityDataset

    seeds = _seed_list(options, split)
    width = int(options.get("width", data.input_width))
    height = int(options.get("height", data.input_height))
    try:
        sc_config = SynthCityConfig(**dict(options.get("synthcity_config") or {}))
    except TypeError as exc:
        raise ConfigError(f"data.{split}.synthcity_config: {exc}") from exc
    source = SynthCityDataset(
        seeds,
        width,
        height,
        frames_per_seed=int(options.get("frames_per_seed", 1)),
        config=sc_config,
        index_stride=int(options.get("index_stride", 10)),
    )
    if not options.get("cache", True):
        return _FarMaskAdapter(source)
    key = json.dumps(
        {
            "seeds": seeds,
            "width": width,
            "height": height,
            "frames_per_seed": source.frames_per_seed,
            "index_stride": source.index_stride,
            "config": repr(sc_config),
            "generator": _synthcity_source_hash(),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = cache_dir / "synthcity" / f"{split}-{width}x{height}-n{len(source)}-{digest}"
    return build_array_cache(source, folder, f"SynthCity {split}")


class _FarMaskAdapter:
    """SynthCity rendered on access, with the far mask (sky) added to each sample."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, k: int) -> dict[str, Any]:
        sample = dict(self.source[k])
        sample["far_mask"] = np.isposinf(sample["depth_m"])
        return sample


def build_array_cache(source: Any, folder: Path, what: str) -> ArraySamples:
    """Render/decode every sample of ``source`` once into ``folder`` (npy files), then map them.

    The folder is filled under a temporary name and renamed when complete, so an interrupted
    run never leaves a half-written cache that a later run would trust.
    """
    if not (folder / "complete").exists():
        from tqdm import tqdm

        first = source[0]
        height, width = first["depth_m"].shape
        n = len(source)
        tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.mkdir(parents=True)
        try:
            open_memmap = np.lib.format.open_memmap
            rgb = open_memmap(tmp / "rgb.npy", "w+", np.uint8, (n, height, width, 3))
            depth = open_memmap(tmp / "depth_m.npy", "w+", np.float32, (n, height, width))
            intr = np.zeros((n, 4), np.float64)
            ids = np.zeros((n, 2), np.int64)
            for k in tqdm(range(n), desc=f"caching {what}", unit="frame", leave=False):
                sample = first if k == 0 else source[k]
                rgb[k] = sample["rgb"]
                depth[k] = sample["depth_m"]
                i = sample["intrinsics"]
                intr[k] = (i.fx_px, i.fy_px, i.cx_px, i.cy_px)
                ids[k] = (int(sample.get("seed", -1)), int(sample.get("index", k)))
            rgb.flush()
            depth.flush()
            del rgb, depth
            np.save(tmp / "intrinsics.npy", intr)
            np.save(tmp / "ids.npy", ids)
            (tmp / "complete").write_text("ok\n")
            try:
                os.replace(tmp, folder)
            except OSError:
                # Another process (a DDP rank, a parallel run) finished the same cache first.
                if not (folder / "complete").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("cached %d %s samples in %s", n, what, folder)
    try:
        return ArraySamples(
            rgb=np.load(folder / "rgb.npy", mmap_mode="r"),
            depth_m=np.load(folder / "depth_m.npy", mmap_mode="r"),
            intrinsics=np.load(folder / "intrinsics.npy"),
            ids=np.load(folder / "ids.npy"),
        )
    except (OSError, ValueError) as exc:
        raise DatasetError(f"sample cache {folder} is unreadable ({exc}); delete it") from exc


# --------------------------------------------------------------------------------- transforms
def _resize(array: npt.NDArray[Any], width: int, height: int, nearest: bool) -> npt.NDArray[Any]:
    if array.shape[1] == width and array.shape[0] == height:
        return array
    import cv2

    if nearest:
        # Nearest keeps depth values exact and never blends a foreground edge with the sky.
        interp = cv2.INTER_NEAREST
    elif width <= array.shape[1] and height <= array.shape[0]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(array), (width, height), interpolation=interp)


def _metric(depth: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Metric depth with every invalid value (non-finite, <= 0) as NaN."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)


class SampleTransform:
    """Sample dict -> network tensors: geometry (+ augmentation), normalisation, canonical targets.

    Output dict: ``image`` (3, H, W) float32 normalised, ``target`` (1, H, W) float32 depth in
    the canonical camera (``depth_m * train_fx_px / fx_at_input``), ``mask`` (1, H, W) bool,
    ``depth_m`` (1, H, W) float32 metric ground truth at the input size (NaN invalid), ``fx_px``
    (focal length at the input size). Augmentation draws from a generator seeded by (seed,
    epoch, index), so a sample's augmentation is the same whichever worker loads it and after a
    resume.
    """

    def __init__(
        self,
        data: DataConfig,
        mean: Sequence[float],
        std: Sequence[float],
        train_fx_px: float,
        head_range_m: tuple[float, float],
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.width = data.input_width
        self.height = data.input_height
        self.clamp_far = data.far_targets == "clamp"
        self.lut = (
            (np.arange(256, dtype=np.float32)[:, None] / 255.0 - np.asarray(mean, np.float32))
            / np.asarray(std, np.float32)
        ).astype(np.float32)
        self.train_fx_px = float(train_fx_px)
        self.min_m, self.max_m = head_range_m
        self.augment = augment
        self.seed = int(seed)

    def __call__(
        self, sample: Mapping[str, Any], epoch: int = 0, index: int = 0
    ) -> dict[str, Any]:
        rgb = np.asarray(sample["rgb"])
        depth = np.asarray(sample["depth_m"], dtype=np.float32)
        intr: Intrinsics = sample["intrinsics"]
        far = sample.get("far_mask")
        far = np.zeros(depth.shape, bool) if far is None else np.asarray(far, bool)
        aux = sample.get("aux_depth_m")
        if rgb.shape[:2] != depth.shape or intr.shape != depth.shape:
            raise DatasetError(
                f"sample {index}: rgb {rgb.shape[:2]}, depth {depth.shape} and intrinsics "
                f"{intr.shape} must have the same size"
            )
        if aux is not None:
            aux = np.asarray(aux, dtype=np.float32)
            if aux.shape != depth.shape:
                raise DatasetError(
                    f"sample {index}: aux_depth_m {aux.shape} must have the size of depth_m "
                    f"{depth.shape}"
                )
            # Riding along as a second channel keeps both depths on exactly the same pixels
            # through every resize, crop and flip.
            depth = np.stack([depth, aux], axis=-1)
        if self.augment is None:
            rgb = _resize(rgb, self.width, self.height, nearest=False)
            depth = _resize(depth, self.width, self.height, nearest=True)
            far = _resize(far.view(np.uint8), self.width, self.height, nearest=True).view(bool)
            intr = intr.resized(self.width, self.height)
            rgb_f = self.lut[rgb, np.arange(3)]
        else:
            rng = np.random.default_rng([self.seed, int(epoch), int(index)])
            rgb, depth, far, intr = self._geometry(rgb, depth, far, intr, rng)
            rgb_f = self._colour(rgb, rng)
        if aux is not None:
            depth, aux = depth[..., 0], depth[..., 1]
        image = np.ascontiguousarray(rgb_f.transpose(2, 0, 1))
        target, mask = self.targets(depth, far, intr.fx_px)
        out = {
            "image": image,
            "target": target[None],
            "mask": mask[None],
            "depth_m": _metric(depth)[None],
            "fx_px": np.float32(intr.fx_px),
        }
        if aux is not None:
            # A second source knows nothing of the first's far mask (LiDAR has no sky).
            aux_target, aux_mask = self.targets(aux, np.zeros(aux.shape, bool), intr.fx_px)
            out.update(
                aux_target=aux_target[None],
                aux_mask=aux_mask[None],
                aux_depth_m=_metric(aux)[None],
            )
        return out

    def targets(
        self, depth: npt.NDArray[np.float32], far: npt.NDArray[np.bool_], fx_px: float
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Canonical-camera targets and their validity mask."""
        with np.errstate(invalid="ignore", over="ignore"):
            canon = depth * np.float32(self.train_fx_px / fx_px)
            finite = np.isfinite(canon) & (canon > 0)
            mask = finite & (canon >= self.min_m) & (canon <= self.max_m)
            if self.clamp_far:
                beyond = far | (finite & (canon > self.max_m))
                canon = np.where(beyond, np.float32(self.max_m), canon)
                mask |= beyond
        target = np.where(mask, canon, np.float32(1.0)).astype(np.float32)
        return target, mask

    def _geometry(
        self,
        rgb: npt.NDArray[np.uint8],
        depth: npt.NDArray[np.float32],
        far: npt.NDArray[np.bool_],
        intr: Intrinsics,
        rng: np.random.Generator,
    ) -> tuple[Any, Any, Any, Intrinsics]:
        aug = self.augment
        if aug is None:  # pragma: no cover - guarded by the caller
            raise DatasetError("no augmentation configured")
        lo, hi = aug.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        # Enlarge the source so that it covers the input size at ``scale``, keeping its aspect.
        h0, w0 = depth.shape[:2]
        factor = scale * max(self.width / w0, self.height / h0)
        new_w = max(self.width, round(w0 * factor))
        new_h = max(self.height, round(h0 * factor))
        x0 = int(rng.integers(0, new_w - self.width + 1))
        y0 = int(rng.integers(0, new_h - self.height + 1))
        rgb = _resize(rgb, new_w, new_h, nearest=False)[
            y0 : y0 + self.height, x0 : x0 + self.width
        ]
        depth = _resize(depth, new_w, new_h, nearest=True)[
            y0 : y0 + self.height, x0 : x0 + self.width
        ]
        far = _resize(far.view(np.uint8), new_w, new_h, nearest=True)[
            y0 : y0 + self.height, x0 : x0 + self.width
        ].view(bool)
        intr = intr.resized(new_w, new_h).cropped(x0, y0, self.width, self.height)
        if rng.random() < aug.hflip_prob:
            rgb, depth, far = rgb[:, ::-1], depth[:, ::-1], far[:, ::-1]
            intr = intr.flipped_horizontally()
        return rgb, depth, far, intr

    def _colour(self, rgb: npt.NDArray[np.uint8], rng: np.random.Generator) -> Any:
        aug = self.augment
        if aug is None:  # pragma: no cover - guarded by the caller
            raise DatasetError("no augmentation configured")
        img = rgb.astype(np.float32)
        b = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
        c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
        s = rng.uniform(1 - aug.saturation, 1 + aug.saturation)
        gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = img * b
        img = (img - gray.mean() * b) * c + gray.mean() * b
        gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = (img - gray[..., None]) * s + gray[..., None]
        u8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        return self.lut[u8, np.arange(3)]


class TransformedDataset:
    """A registered data set seen through a :class:`SampleTransform` (a torch map-style set).

    Indices are ``(index, epoch)`` pairs from :class:`EpochSampler` (a plain int means epoch 0),
    so the epoch reaches the augmentation without shared state between DataLoader workers.
    """

    def __init__(self, source: Any, transform: SampleTransform) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (item, 0) if isinstance(item, (int, np.integer)) else item
        return self.transform(self.source[int(index)], epoch=int(epoch), index=int(index))


class EpochSampler:
    """Deterministic, resumable, DDP-aware sampler yielding ``(index, epoch)`` pairs.

    Like ``torch.utils.data.DistributedSampler``: the permutation is drawn from (seed, epoch),
    padded to a multiple of ``world_size`` and strided by ``rank``; with ``drop_last`` each
    rank's share is cut to whole batches. ``start`` skips the first samples of this rank's share
    (a mid-epoch resume) without loading them.
    """

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if n < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"bad sampler: n={n}, rank={rank}, world_size={world_size}")
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.drop_last = batch_size, drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch (before ``start`` is applied)."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()
        else:
            order = list(range(self.n))
        total = math.ceil(self.n / self.world_size) * self.world_size
        order += order[: total - self.n]
        mine = order[self.rank :: self.world_size]
        if self.drop_last:
            mine = mine[: len(mine) // self.batch_size * self.batch_size]
        return mine

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.indices()[self.start :]:
            yield (index, self.epoch)
