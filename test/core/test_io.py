"""Tests of cloudypoints_core.io: atomic writes leave either the old or the new file, no temps."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cloudypoints_core.io import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_bytes_and_text(tmp_path) -> None:
    target = atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01\x02")
    assert target.read_bytes() == b"\x00\x01\x02"
    atomic_write_bytes(target, bytearray(b"new"))
    assert target.read_bytes() == b"new"
    atomic_write_bytes(target, memoryview(np.arange(4, dtype=np.uint8)))
    assert target.read_bytes() == bytes([0, 1, 2, 3])
    text = atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert text.read_text(encoding="utf-8") == "héllo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "t.txt"]


def test_permissions_follow_umask(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "p.bin", b"x")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_atomic_path_keeps_suffix_and_replaces(tmp_path) -> None:
    target = tmp_path / "nested" / "depth.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".npy" and tmp != target
        np.save(tmp, np.arange(3))  # np.save would append .npy to any other name
        assert not target.exists()
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert [p.name for p in target.parent.iterdir()] == ["depth.npy"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path) -> None:
    target = atomic_write_text(tmp_path / "cfg.yaml", "old: 1\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("new: half written")
        raise RuntimeError("boom")
    assert target.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.yaml"]


def test_nothing_written_raises(tmp_path) -> None:
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "never.txt"):
        pass
    assert list(tmp_path.iterdir()) == []
