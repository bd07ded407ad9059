"""On-disk cache of serialized TensorRT engines, keyed so that a stale engine is never loaded.

A TensorRT engine is only valid for the exact network, TensorRT version, GPU model (compute
capability) and build options it was built with. The cache key hashes all of them; a change of
any one gives a new key and hence a rebuild, and the superseded engine of the same ONNX file (by
its path, not the model's name: two packages trained from one config share a name) on the same
GPU with the same build options is deleted. Each entry is two files written atomically:

- ``<model>-<key[:20]>.engine``: the serialized engine;
- ``<model>-<key[:20]>.json``: the full key and the engine's size and sha256, written last, so
  an entry without (or with a mismatching) sidecar is incomplete or corrupt and is rebuilt.

The default folder follows the XDG base-directory spec: ``$CLOUDYPOINTS_ENGINE_CACHE``, else
``$XDG_CACHE_HOME/cloudypoints/engines``, else ``~/.cache/cloudypoints/engines``. An unwritable
folder is not an error: the engine is built and kept in memory, with a warning.

Nothing here imports TensorRT, so all of it is tested on machines without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudypoints_core.errors import BackendError, ConfigError
from cloudypoints_core.io import atomic_write_bytes

__all__ = [
    "CACHE_FORMAT_VERSION",
    "PRECISIONS",
    "EngineBuildOptions",
    "EngineCache",
    "EngineKey",
    "GpuInfo",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

#: Bump when the entry layout changes, so old entries are ignored rather than misread.
CACHE_FORMAT_VERSION = 2
PRECISIONS = ("fp16", "fp32")
#: Workspace bounds: below 16 MiB TensorRT finds no tactics for most convolutions; above 64 GiB
#: is certainly a unit mistake (bytes instead of MiB).
MIN_WORKSPACE_MB = 16
MAX_WORKSPACE_MB = 65536


@dataclass(frozen=True)
class EngineBuildOptions:
    """How an engine is built: precision ("fp16" default, or "fp32") and workspace limit (MiB)."""

    precision: str = "fp16"
    workspace_mb: int = 1024

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"engine precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        value = self.workspace_mb
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not MIN_WORKSPACE_MB <= value <= MAX_WORKSPACE_MB
        ):
            raise ConfigError(
                f"engine workspace_mb must be an integer in [{MIN_WORKSPACE_MB}, "
                f"{MAX_WORKSPACE_MB}] MiB, got {value!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for: its name and CUDA compute capability (major, minor)."""

    name: str
    compute_capability: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "compute_capability": list(self.compute_capability)}


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; :meth:`digest` is its cache identity."""

    model_name: str
    onnx_sha256: str
    tensorrt_version: str
    gpu: GpuInfo
    options: EngineBuildOptions
    input_shape: tuple[int, ...]
    #: The resolved path of the ONNX file the engine comes from: what a newer engine supersedes.
    #: A label like the model name, not part of the digest (a moved package may keep its engine).
    source: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise ConfigError(f"onnx_sha256 must be 64 hex digits, got {self.onnx_sha256!r}")
        if not self.tensorrt_version:
            raise ConfigError("tensorrt_version is empty")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT_VERSION,
            "model_name": self.model_name,
            "onnx_sha256": self.onnx_sha256,
            "tensorrt_version": self.tensorrt_version,
            "gpu": self.gpu.to_dict(),
            "options": self.options.to_dict(),
            "input_shape": list(self.input_shape),
            "source": self.source,
        }

    def digest(self) -> str:
        """sha256 of the canonical JSON of :meth:`to_dict` (model name and source are labels)."""
        data = self.to_dict()
        del data["model_name"], data["source"]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def family(self) -> dict[str, Any]:
        """What two keys share when one supersedes the other (same ONNX file, GPU, options)."""
        return {
            "source": self.source,
            "gpu": self.gpu.to_dict(),
            "options": self.options.to_dict(),
        }


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user engine cache folder (see the module docstring for the order of lookup)."""
    env = os.environ if environ is None else environ
    explicit = env.get("CLOUDYPOINTS_ENGINE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cloudypoints" / "engines"


def _safe_label(name: str) -> str:
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return (label or "model")[:48]


class EngineCache:
    """A folder of serialized engines; see the module docstring for layout and guarantees."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = (
            Path(directory).expanduser() if directory is not None else default_cache_dir()
        )

    # ------------------------------------------------------------------------------- paths
    def engine_path(self, key: EngineKey) -> Path:
        return self.directory / f"{_safe_label(key.model_name)}-{key.digest()[:20]}.engine"

    def meta_path(self, key: EngineKey) -> Path:
        return self.engine_path(key).with_suffix(".json")

    # ------------------------------------------------------------------------------ access
    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine for ``key``, or None (absent, incomplete or corrupt: then removed)."""
        engine_path = self.engine_path(key)
        meta_path = self.meta_path(key)
        if not engine_path.is_file() or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = engine_path.read_bytes()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("engine cache entry %s is unreadable (%s); rebuilding", engine_path, exc)
            self.discard(key)
            return None
        problem = self._check_entry(key, meta, data)
        if problem:
            log.warning("engine cache entry %s is corrupt (%s); rebuilding", engine_path, problem)
            self.discard(key)
            return None
        return data

    @staticmethod
    def _check_entry(key: EngineKey, meta: Any, data: bytes) -> str | None:
        if not isinstance(meta, dict):
            return "sidecar is not a JSON object"
        if meta.get("key") != key.to_dict() or meta.get("digest") != key.digest():
            return "sidecar key does not match"
        if meta.get("size") != len(data):
            return f"engine has {len(data)} bytes, sidecar says {meta.get('size')}"
        if meta.get("sha256") != hashlib.sha256(data).hexdigest():
            return "engine checksum mismatch"
        return None

    def store(self, key: EngineKey, data: bytes) -> Path | None:
        """Write the entry atomically; on an unwritable folder warn and return None."""
        engine_path = self.engine_path(key)
        meta = {
            "key": key.to_dict(),
            "digest": key.digest(),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(engine_path, data)
            # The sidecar goes last: its presence marks the entry complete.
            atomic_write_bytes(self.meta_path(key), json.dumps(meta, indent=1).encode("utf-8"))
        except OSError as exc:
            log.warning(
                "cannot write the engine cache in %s (%s); keeping the engine in memory only "
                "(set cache_dir or CLOUDYPOINTS_ENGINE_CACHE to a writable folder)",
                self.directory,
                exc,
            )
            return None
        self._remove_superseded(key)
        return engine_path

    def discard(self, key: EngineKey) -> None:
        """Remove the entry for ``key`` (both files), ignoring files already gone."""
        for path in (self.meta_path(key), self.engine_path(key)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove stale engine cache file %s: %s", path, exc)

    def entries(self) -> list[dict[str, Any]]:
        """Sidecar contents of the entries in the folder (unreadable sidecars are skipped)."""
        if not self.directory.is_dir():
            return []
        found = []
        for meta_path in sorted(self.directory.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(meta, dict) and isinstance(meta.get("key"), dict):
                found.append({**meta, "path": str(meta_path.with_suffix(".engine"))})
        return found

    def _remove_superseded(self, key: EngineKey) -> None:
        # An engine of the same ONNX file, GPU and options but an older network or TensorRT can
        # never be used again; without this the folder would grow by one engine per retraining.
        # The file's path, not the model name, says "same": two models trained from one config
        # share a name and would otherwise evict each other's engines on alternate starts.
        family = key.family()
        digest = key.digest()
        for entry in self.entries():
            stored = entry["key"]
            if entry.get("digest") == digest:
                continue
            if stored.get("format") == CACHE_FORMAT_VERSION:
                superseded = {
                    "source": stored.get("source"),
                    "gpu": stored.get("gpu"),
                    "options": stored.get("options"),
                } == family
            else:
                # An entry of an older layout is never loaded again (its key cannot match):
                # dropped when its model's engine is rebuilt.
                superseded = stored.get("model_name") == key.model_name
            if superseded:
                engine_path = Path(entry["path"])
                log.info("removing superseded engine %s", engine_path)
                for path in (engine_path.with_suffix(".json"), engine_path):
                    try:
                        path.unlink()
                    except OSError:
                        pass

    def get_or_build(
        self, key: EngineKey, build: Callable[[], bytes], *, rebuild: bool = False
    ) -> tuple[bytes, bool]:
        """(engine bytes, cache hit?): the cached engine, else ``build()`` stored for next time."""
        if not rebuild:
            data = self.load(key)
            if data is not None:
                log.info("engine cache hit: %s", self.engine_path(key))
                return data, True
        log.info(
            "engine cache %s: building %s (this can take minutes)",
            "rebuild requested" if rebuild else "miss",
            self.engine_path(key).name,
        )
        data = build()
        if not data:
            raise BackendError(f"building engine {self.engine_path(key).name} returned no data")
        self.store(key, data)
        return data, False
