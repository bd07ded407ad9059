"""Optional MLflow experiment tracking: parameters, per-epoch metrics, plots, the model package.

With ``tracking.enabled: false`` a :class:`NullTracker` does nothing and mlflow is never
imported. Enabled, runs go to ``tracking.tracking_uri``, else $MLFLOW_TRACKING_URI, else a local
file store ``./mlruns`` (``MLFLOW_ALLOW_FILE_STORE=true mlflow ui`` in that folder shows them;
MLflow 3 keeps the file store behind that opt-in, which the tracker sets for file URIs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from cloudypoints_core._optional import require
from cloudypoints_core.training.config import TrackingConfig

__all__ = ["MlflowTracker", "NullTracker", "Tracker", "create_tracker", "flatten_params"]

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """What the trainer reports to; every method is a no-op for the null tracker."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Tracking disabled."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": "0.001"}`` (MLflow params: flat strings)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        else:
            # MLflow caps a parameter value at a few hundred characters.
            out[name] = str(value)[:250]
    return out


class MlflowTracker:
    """One MLflow run; created by :func:`create_tracker`."""

    def __init__(self, config: TrackingConfig, run_dir: Path) -> None:
        self.mlflow = require("mlflow", "MLflow tracking (or set tracking.enabled: false)")
        uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (Path.cwd() / "mlruns").as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps the file store behind an opt-in; a local folder needs no database
            # server (nor sqlalchemy, which mlflow-skinny lacks), so opt in for file URIs.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.mlflow.set_tracking_uri(uri)
        self.mlflow.set_experiment(config.experiment)
        self.run = self.mlflow.start_run(run_name=config.run_name or run_dir.name)
        self.uri = uri
        log.info("MLflow run %s in %s", self.run.info.run_id, uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.mlflow.log_params(flatten_params(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def create_tracker(config: TrackingConfig, run_dir: Path, enabled: bool = True) -> Tracker:
    """An MLflow tracker if ``config.enabled`` (and this process writes), else a null one."""
    if not (config.enabled and enabled):
        return NullTracker()
    return MlflowTracker(config, run_dir)
