"""The one checkpoint loader: a bare state dict, both nested wrappings, and files with neither."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from cloudypoints_core.errors import ModelError
from cloudypoints_core.models.weights import CHECKPOINT_STATE_KEYS, load_checkpoint_state


def _state() -> dict[str, torch.Tensor]:
    return {"conv.weight": torch.arange(6.0).reshape(2, 3), "conv.bias": torch.tensor([1.5, -2.0])}


def _assert_same(loaded: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: s, id="bare"),
        pytest.param(lambda s: {"model": s, "epoch": 7, "optimizer": {"lr": 0.1}}, id="model"),
        pytest.param(
            lambda s: {"state_dict": s, "epoch": 7, "hyper_parameters": {"lr": 0.1}},
            id="state_dict",
        ),
    ],
)
def test_each_wrapping_gives_the_same_state(tmp_path: Path, wrap: Any) -> None:
    path = tmp_path / "weights.pth"
    torch.save(wrap(_state()), path)
    _assert_same(load_checkpoint_state(path), _state())


def test_wrapping_keys_are_tried_in_order(tmp_path: Path) -> None:
    assert CHECKPOINT_STATE_KEYS == ("model", "state_dict")
    other = {"head.weight": torch.zeros(1)}
    torch.save({"model": _state(), "state_dict": other}, tmp_path / "both.pth")
    _assert_same(load_checkpoint_state(tmp_path / "both.pth"), _state())
    # A "model" entry that is not a state dict does not hide the one under "state_dict".
    torch.save({"model": "unet", "state_dict": _state()}, tmp_path / "named.pth")
    _assert_same(load_checkpoint_state(tmp_path / "named.pth"), _state())


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ({"weights": _state(), "epoch": 3}, r"found keys \['weights', 'epoch'\]"),
        ({"model": {"w": [1, 2]}}, r"found keys \['model'\]"),
        ([torch.zeros(1)], "found a list, not a dict"),
    ],
    ids=["other-key", "nested-non-tensors", "list"],
)
def test_neither_wrapping_names_the_file_and_the_keys(
    tmp_path: Path, content: Any, found: str
) -> None:
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(ModelError, match=found) as err:
        load_checkpoint_state(path)
    message = str(err.value)
    assert str(path) in message
    assert "neither a state dict of tensors nor one under 'model' or 'state_dict'" in message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing\.pth does not exist"):
        load_checkpoint_state(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"junk\.pth cannot be read: truncated, corrupt"):
        load_checkpoint_state(tmp_path / "junk.pth")


class _Pickled:
    """A class torch.load would have to import: refused with ``weights_only=True``."""


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    torch.save({"model": _state(), "extra": _Pickled()}, tmp_path / "code.pth")
    with pytest.raises(ModelError, match="weights_only=True"):
        load_checkpoint_state(tmp_path / "code.pth")
