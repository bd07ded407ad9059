"""The one exception hierarchy of cloudypoints_core: every error the library raises derives from
CloudyPointsError."""

from __future__ import annotations


class CloudyPointsError(Exception):
    """Root of every error raised by cloudypoints_core."""


class InputError(CloudyPointsError, ValueError):
    """An array, image or message has the wrong dtype, shape, size or content."""


class EncodingError(InputError):
    """An image encoding is unsupported or inconsistent with the data."""


class IntrinsicsError(InputError):
    """Camera intrinsics are invalid (non-finite or non-positive focal length, bad shape)."""


class ConfigError(CloudyPointsError, ValueError):
    """A configuration file or value is invalid."""


class ModelError(CloudyPointsError):
    """A model package or spec is missing, corrupt or inconsistent with its network."""


class BackendError(CloudyPointsError):
    """An inference backend is unknown, unavailable or failed."""


class DependencyError(CloudyPointsError, ImportError):
    """An optional library needed for the requested feature is not installed."""


class DatasetError(CloudyPointsError):
    """A data set root, split or file is missing or unreadable."""


class BagError(CloudyPointsError):
    """A rosbag2 is missing, truncated or lacks the expected topics."""


class ScaleError(CloudyPointsError):
    """A relative depth model has no metric scale for a frame: the ground fit failed and no
    fallback (a held fit, a fixed scale) is configured. Callers drop the frame or fall back."""
