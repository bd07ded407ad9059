"""MiDaS v2.1 small: parity with the official code, official key layout, cost, output, export.

The fixture (``fixtures/midas_small``, see its PROVENANCE.md) holds the official network's output
on deterministic weights and its state-dict keys and shapes; no weights are shipped and nothing
is downloaded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from cloudypoints_core.errors import ConfigError, InputError  # noqa: E402
from cloudypoints_core.models import count_flops, create_model, model_info  # noqa: E402
from cloudypoints_core.models.midas_small import MidasNetSmall  # noqa: E402
from cloudypoints_core.models.weights import (  # noqa: E402
    deterministic_state_dict,
    load_checkpoint_state,
    load_strict,
)

FIXTURES = Path(__file__).parent / "fixtures" / "midas_small"


@pytest.fixture(scope="module")
def parity() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "midas_small_parity.npz") as data:
        return {k: data[k] for k in data.files}


def _model(non_negative: bool = True) -> MidasNetSmall:
    model = create_model("midas_small", non_negative=non_negative)
    assert isinstance(model, MidasNetSmall)
    load_strict(model, deterministic_state_dict(model), "deterministic weights")
    return model.eval()


@pytest.mark.parametrize("output", ["non_negative", "linear"])
def test_matches_official_output(parity: dict[str, np.ndarray], output: str) -> None:
    model = _model(non_negative=output == "non_negative")
    x = torch.from_numpy(parity["input"].astype(np.float32))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1, 96, 128)
    ours, ref = out[:, 0].numpy(), parity[output]
    if output == "linear":
        # The map before the final ReLU must carry signal of both signs, or parity proves little.
        assert (ref < 0).mean() > 0.5 and (ref > 0).mean() > 0.05
    rel_err = float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))
    assert rel_err <= 1e-4, f"{output}: max relative difference {rel_err:.2e}"


def test_state_dict_keys_and_shapes_match_official() -> None:
    official = json.loads((FIXTURES / "midas_small_state_dict_keys.json").read_text())
    with torch.device("meta"):
        model = create_model("midas_small")
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    # Same keys, shapes and order (BatchNorm buffers included) as the released checkpoint.
    assert ours == [(k, shape) for k, shape in official]


def test_parameter_count_is_the_published_21_m_and_cost_at_256() -> None:
    model = create_model("midas_small")
    cost = count_flops(model, 256, 256)
    assert round(cost["params_m"], 1) == 21.3  # README table: 21 M
    # Most of the cost is the decoder at high resolution (the 3x3 convolutions at 1/2 and full
    # size): several times the small stand-in CNN that benchmarks used before (~1.2 GMACs).
    assert 3.0 < cost["gmacs"] < 6.0
    assert model_info("midas_small").input_multiple == 32


def test_output_shape_and_non_negative_for_extreme_inputs() -> None:
    model = _model()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3)) * 50.0
    with torch.no_grad():
        out = model(x)
        linear = _model(non_negative=False)(x)
    assert out.shape == (2, 1, 64, 96)
    assert torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) > 0.0
    # The ReLU is the only difference between the two heads.
    assert torch.equal(out, torch.relu(linear))
    assert float(linear.min()) < 0.0


def test_bad_configuration_and_input_size() -> None:
    with pytest.raises(ConfigError, match="features"):
        create_model("midas_small", features=63)
    with pytest.raises(ConfigError, match="bad configuration"):
        create_model("midas_small", backbone="resnext101")
    model = _model()
    with pytest.raises(InputError, match="multiple of 32.*80x64"):
        model(torch.zeros(1, 3, 64, 80))


def test_checkpoint_file_round_trip(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "midas_v21_small_256.pt"
    torch.save(model.state_dict(), path)
    fresh = create_model("midas_small")
    load_strict(fresh, load_checkpoint_state(path), str(path))
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_export_folds_batchnorm_and_keeps_tensorflow_padding() -> None:
    model = _model()
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 64, 64),),
            buffer,
            input_names=["image"],
            output_names=["depth"],
            opset_version=17,
            dynamo=False,
        )
    graph = onnx.load_from_string(buffer.getvalue()).graph
    ops = [node.op_type for node in graph.node]
    assert "BatchNormalization" not in ops
    # One explicit (asymmetric) pad per stride-2 convolution: stem and four stages.
    assert ops.count("Pad") == 5
    # Every convolution is one Conv node (BatchNorm folded into them) except the coarsest
    # fusion block's unused skip unit (two convolutions, in the checkpoint only); the pads are
    # constants (the exporter leaves a few tiny shape ops that build them).
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert ops.count("Conv") == convs - 2
    heavy = {"Conv", "Clip", "Relu", "Add", "Resize"}
    assert {op for op in ops if op not in heavy} <= {
        "Pad",
        "Constant",
        "ConstantOfShape",
        "Concat",
        "Reshape",
        "Slice",
        "Transpose",
        "Cast",
        "Shape",
    }
    # The exported graph computes what the network does (TensorFlow padding included).
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    (out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == (1, 1, 64, 64)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_deterministic_weights_keep_batchnorm_sane() -> None:
    """BatchNorm gains and variances get the gain rule (near 1, variances positive) whatever the
    module's name, so 72 BatchNorm layers neither blow the signal up nor divide by sqrt(<0)."""
    model = create_model("midas_small")
    state = deterministic_state_dict(model)
    bns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 72  # stem, the separable block (2), 23 inverted residuals (3 each)
    for name in bns:
        for leaf in ("weight", "running_var"):
            value = state[f"{name}.{leaf}"]
            assert 0.9 <= float(value.min()) and float(value.max()) <= 1.1, f"{name}.{leaf}"
        assert float(state[f"{name}.bias"].abs().max()) <= 0.02
    # Conv weights and biases follow the name-only rule.
    conv = state["pretrained.layer1.0.weight"]
    assert float(conv.abs().max()) <= (3.0 / 27) ** 0.5
