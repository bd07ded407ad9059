"""ament_python build of cloudypoints_ros: the ROS node package plus the pure-Python core."""

from __future__ import annotations

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "cloudypoints_ros"
#: Folders of data inside the core (no __init__.py: nothing to import), declared as packages so
#: setuptools installs their files without deprecation warnings.
DATA_PACKAGES = [
    "cloudypoints_core.assets",
    "cloudypoints_core.assets.default_model",
    "cloudypoints_core.configs",
    "cloudypoints_core.data.splits",
]


def _data_files() -> list[tuple[str, list[str]]]:
    share = f"share/{PACKAGE}"
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (share, ["package.xml"]),
        (f"{share}/launch", glob("launch/*.py")),
        (f"{share}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ]
    return files


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(
        include=[
            "cloudypoints_ros",
            "cloudypoints_ros.*",
            "cloudypoints_core",
            "cloudypoints_core.*",
        ]
    )
    + DATA_PACKAGES,
    data_files=_data_files(),
    # The bundled default model package ships inside the core so every install finds it.
    package_data={
        "cloudypoints_core.assets.default_model": ["*.yaml", "*.onnx", "*.pt", "*.md"],
        "cloudypoints_core.configs": ["*.yaml"],
        "cloudypoints_core.data.splits": ["*.txt", "*.md"],
    },
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy>=1.21",
        "opencv-python-headless>=4.5",
        "PyYAML>=5.4",
        "tqdm>=4.60",
        "matplotlib>=3.5",
    ],
    extras_require={
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "torch": ["torch>=2.1"],
        "bags": ["rosbags>=0.10"],
        "tracking": ["mlflow-skinny>=2.10"],
        # Compiled back-projection of unorganised clouds (cloudypoints_core/_fused.py).
        "fast": ["numba>=0.59"],
        "test": ["pytest>=7,<8.4"],
    },
    zip_safe=True,
    maintainer="CloudyPoints maintainers",
    maintainer_email="maintainers@cloudypoints.dev",
    description="Monocular metric depth and point clouds for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "depth_node = cloudypoints_ros.depth_node:main",
            "cloudypoints = cloudypoints_core.cli.main:main",
        ],
    },
)
