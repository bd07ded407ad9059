"""``cloudypoints import-model``: presets, ONNX signature checks and the written package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from preset_oracles import oracle_model

from cloudypoints_core.cli.main import main
from cloudypoints_core.errors import ConfigError, ModelError
from cloudypoints_core.inference.onnx_meta import read_spec_from_onnx
from cloudypoints_core.inference.package import load_model_package
from cloudypoints_core.inference.presets import (
    PRESETS,
    ImportOptions,
    import_model,
    list_presets,
    register_importer,
    weights_kind,
)

#: The I/O signature of each preset's real export: (input, output, squeezed channel, sky).
SIGNATURES: dict[str, dict[str, Any]] = {
    "depth-anything-v2-relative": {
        "input_name": "image",
        "output_name": "depth",
        "squeeze_channel": True,
        "kind": "affine",
    },
    "depth-anything-v2-metric": {
        "input_name": "image",
        "output_name": "depth",
        "squeeze_channel": True,
        "kind": "metric",
    },
    "depth-anything-3-metric": {
        "input_name": "image",
        "output_name": "depth",
        "sky_output": "sky",
        "kind": "metric",
    },
    "metric3d-v2": {"input_name": "image", "output_name": "pred_depth", "kind": "metric"},
    # torch.onnx.export without names, as MiDaS' tf/make_onnx_model.py does.
    "midas-v21-small": {
        "input_name": "input.1",
        "output_name": "1079",
        "squeeze_channel": True,
        "kind": "affine",
    },
}


def write_oracle(
    path: Path, preset_name: str, size: tuple[int, int] | None = None, **overrides: Any
) -> Path:
    import onnx

    preset = PRESETS[preset_name]
    width, height = size or preset.default_input_size
    fields = dict(SIGNATURES[preset_name])
    fields.update(overrides)
    model = oracle_model(
        width=width,
        height=height,
        mean=preset.spec_fields["mean"],
        std=preset.spec_fields["std"],
        **fields,
    )
    onnx.save(model, str(path))
    return path


def _options(preset_name: str, **kw: Any) -> ImportOptions:
    if "max_depth_m" in PRESETS[preset_name].required_options:
        kw.setdefault("max_depth_m", 80.0)
    return ImportOptions(**kw)


def test_the_table_has_the_issue_presets() -> None:
    assert set(list_presets()) >= set(SIGNATURES)


@pytest.mark.parametrize("preset_name", sorted(SIGNATURES))
def test_every_preset_imports_its_export(tmp_path: Path, preset_name: str) -> None:
    weights = write_oracle(tmp_path / "net.onnx", preset_name)
    out = import_model(preset_name, weights, tmp_path / "pkg", _options(preset_name))
    package = load_model_package(out)
    spec = package.spec
    preset = PRESETS[preset_name]
    assert spec.spec_version == 2
    assert (spec.input_width, spec.input_height) == preset.default_input_size
    assert spec.input_name == SIGNATURES[preset_name]["input_name"]
    assert spec.output_name == SIGNATURES[preset_name]["output_name"]
    for key, value in preset.spec_fields.items():
        got = getattr(spec, key)
        if key == "mask_outputs":
            assert tuple(m.to_dict() for m in got) == value
        elif isinstance(value, tuple):  # mean, std, pad_value: floats
            assert got == pytest.approx(value), key
        else:
            assert got == value, key
    assert read_spec_from_onnx(out / "model.onnx") == spec
    card = (out / "MODEL_CARD.md").read_text()
    assert preset.card.licence in card and preset.card.source in card
    assert not list(tmp_path.glob(".pkg.*")), "the staging folder must be gone"


def test_dynamic_input_takes_the_requested_size_and_is_fixed(tmp_path: Path) -> None:
    import onnx

    weights = write_oracle(tmp_path / "dyn.onnx", "depth-anything-v2-relative", dynamic=True)
    out = import_model(
        "depth-anything-v2-relative",
        weights,
        tmp_path / "pkg",
        ImportOptions(input_size=(924, 518)),
    )
    spec = load_model_package(out).spec
    assert (spec.input_width, spec.input_height) == (924, 518)
    dims = onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 518, 924]


def test_dynamic_input_without_size_uses_the_preset_default(tmp_path: Path) -> None:
    weights = write_oracle(tmp_path / "dyn.onnx", "metric3d-v2", dynamic=True)
    out = import_model("metric3d-v2", weights, tmp_path / "pkg", ImportOptions(check=False))
    spec = load_model_package(out).spec
    assert (spec.input_width, spec.input_height, spec.input_multiple) == (1064, 616, 14)


def test_metric3d_convnext_size_uses_multiple_32(tmp_path: Path) -> None:
    weights = write_oracle(tmp_path / "m.onnx", "metric3d-v2", size=(1216, 544))
    spec = load_model_package(import_model("metric3d-v2", weights, tmp_path / "p")).spec
    assert spec.input_multiple == 32


@pytest.mark.parametrize(
    ("preset_name", "overrides", "options", "message"),
    [
        ("metric3d-v2", {"output_name": "depth"}, {}, "expected one of ['pred_depth']"),
        ("depth-anything-3-metric", {"sky_output": None}, {}, "'sky' (mask) is missing"),
        ("depth-anything-v2-relative", {}, {"input_size": (640, 480)}, "does not fit"),
        (
            "depth-anything-v2-relative",
            {"dynamic": True},
            {"input_size": (500, 500)},
            "not a multiple of 14",
        ),
        ("metric3d-v2", {"input_name": "pixels"}, {}, "input: expected one of ['image']"),
    ],
)
def test_what_does_not_fit_is_said(
    tmp_path: Path,
    preset_name: str,
    overrides: dict[str, Any],
    options: dict[str, Any],
    message: str,
) -> None:
    weights = write_oracle(tmp_path / "bad.onnx", preset_name, **overrides)
    with pytest.raises(ModelError, match="does not fit preset") as info:
        import_model(preset_name, weights, tmp_path / "pkg", _options(preset_name, **options))
    assert message in str(info.value)
    assert not (tmp_path / "pkg").exists()


def test_wrong_output_size_is_said(tmp_path: Path) -> None:
    import onnx

    model = oracle_model(
        input_name="image",
        output_name="pred_depth",
        width=1064,
        height=616,
        mean=(0, 0, 0),
        std=(1 / 255,) * 3,
        kind="metric",
    )
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 308
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match=r"output 'pred_depth' has shape \[1, 1, 308, 1064\]"):
        import_model("metric3d-v2", tmp_path / "m.onnx", tmp_path / "pkg")


def test_metric_depth_anything_needs_max_depth(tmp_path: Path) -> None:
    weights = write_oracle(tmp_path / "m.onnx", "depth-anything-v2-metric")
    with pytest.raises(ConfigError, match="--max-depth 80 for the outdoor"):
        import_model("depth-anything-v2-metric", weights, tmp_path / "pkg", ImportOptions())
    out = import_model(
        "depth-anything-v2-metric", weights, tmp_path / "pkg", ImportOptions(max_depth_m=20.0)
    )
    assert load_model_package(out).spec.max_depth_m == 20.0


def test_unknown_preset_kind_and_existing_folder(tmp_path: Path) -> None:
    weights = write_oracle(tmp_path / "m.onnx", "midas-v21-small")
    with pytest.raises(ConfigError, match="unknown preset 'midas'"):
        import_model("midas", weights, tmp_path / "pkg")
    (tmp_path / "x.ckpt").write_bytes(b"0")
    with pytest.raises(ConfigError, match="unknown weights file kind '.ckpt'"):
        import_model("midas-v21-small", tmp_path / "x.ckpt", tmp_path / "pkg")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("a")
    with pytest.raises(ConfigError, match="not an empty folder"):
        import_model("midas-v21-small", weights, tmp_path / "full")


def test_an_importer_can_be_registered_for_another_kind(tmp_path: Path) -> None:
    calls: list[Path] = []

    def fake(preset: Any, weights: Path, out: Path, options: ImportOptions) -> Path:
        calls.append(weights)
        return out

    register_importer("fake", fake, (".fake",))
    (tmp_path / "w.fake").write_bytes(b"0")
    assert weights_kind(tmp_path / "w.fake") == "fake"
    with pytest.raises(ConfigError, match="imports \\['onnx'\\] weights, not 'fake'"):
        import_model("midas-v21-small", tmp_path / "w.fake", tmp_path / "pkg")
    assert calls == []


def test_cli_imports_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = write_oracle(tmp_path / "m.onnx", "depth-anything-3-metric")
    code = main(
        [
            "import-model",
            "--preset",
            "depth-anything-3-metric",
            "--weights",
            str(weights),
            "--out",
            str(tmp_path / "pkg"),
            "--name",
            "da3",
        ]
    )
    assert code == 0
    assert load_model_package(tmp_path / "pkg").spec.name == "da3"
    assert main(["import-model", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in SIGNATURES)
    assert main(["import-model", "--preset", "metric3d-v2"]) == 2
    assert (
        main(
            [
                "import-model",
                "--preset",
                "depth-anything-3-metric",
                "--weights",
                str(weights),
                "--out",
                str(tmp_path / "p2"),
                "--input-size",
                "504",
            ]
        )
        == 2
    )


def test_imported_package_runs(tmp_path: Path) -> None:
    from cloudypoints_core.geometry import Intrinsics
    from cloudypoints_core.inference.facade import DepthEstimator

    weights = write_oracle(tmp_path / "m.onnx", "midas-v21-small", affine=(2.0, 0.0))
    out = import_model("midas-v21-small", weights, tmp_path / "pkg")
    est = DepthEstimator.from_package(out, backend="onnxruntime", fixed_scale=1.0)
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[..., 0] = 128
    result = est.predict(rgb, Intrinsics(150.0, 150.0, 99.5, 49.5, 200, 100))
    assert result.depth_m.shape == (100, 200)
    assert np.isfinite(result.depth_m).all()
