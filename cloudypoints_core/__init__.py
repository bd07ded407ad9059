"""CloudyPoints core: monocular metric depth to 3D point clouds, with no ROS imports."""

from __future__ import annotations

__version__ = "0.1.0"
