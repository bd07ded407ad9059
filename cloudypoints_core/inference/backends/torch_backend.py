"""PyTorch backend: the spec's architecture from the models registry with the package's weights."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import BackendError, ConfigError, ModelError
from cloudypoints_core.inference.backends import parse_device, require_cuda_device, validate_batch
from cloudypoints_core.inference.package import ModelPackage
from cloudypoints_core.inference.spec import ModelSpec

log = logging.getLogger(__name__)


def build_network(spec: ModelSpec, factory: Callable[..., Any] | None = None) -> Any:
    """The spec's network with random weights, from ``factory`` or the models registry."""
    if factory is None:
        try:
            from cloudypoints_core.models import create_model
        except ImportError as exc:
            raise ModelError(
                "the torch backend needs cloudypoints_core.models to build "
                f"{spec.architecture!r}: {exc}"
            ) from exc
        factory = create_model
    try:
        return factory(spec.architecture, **dict(spec.arch_config))
    except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError too
        raise ModelError(
            f"cannot build architecture {spec.architecture!r} with arch_config "
            f"{dict(spec.arch_config)}: {exc}"
        ) from exc


def check_state_dict(network: Any, state: Mapping[str, Any], spec: ModelSpec, source: str) -> None:
    """ModelError listing missing, unexpected and mis-shaped keys against ``network``."""
    from cloudypoints_core.models.weights import state_dict_mismatch

    parts = state_dict_mismatch(network, state)
    if parts:
        raise ModelError(
            f"{source} does not fit architecture {spec.architecture!r} with arch_config "
            f"{dict(spec.arch_config)}: " + "; ".join(parts)
        )


class TorchBackend:
    """Runs the network in PyTorch (``inference_mode``), on the CPU or CUDA.

    Options: ``half`` (FP16 weights and input; default on for CUDA, off on the CPU),
    ``compile`` (``torch.compile`` the network), ``cuda_graphs`` (capture one CUDA graph and
    replay it; CUDA only), ``num_threads`` (``torch.set_num_threads``, process-wide),
    ``model_factory`` (a callable ``(architecture, **arch_config) -> nn.Module`` replacing the
    models registry), ``warmup`` (run once at load to validate the output shape).
    """

    name = "torch"
    OPTIONS: ClassVar[Mapping[str, Any]] = {
        "num_threads": None,
        "half": None,
        "compile": False,
        "cuda_graphs": False,
        "model_factory": None,
        "warmup": True,
    }

    def __init__(
        self,
        package: ModelPackage,
        device: str = "cpu",
        *,
        num_threads: int | None = None,
        half: bool | None = None,
        compile: bool = False,  # noqa: A002 - the option's public name
        cuda_graphs: bool = False,
        model_factory: Callable[..., Any] | None = None,
        warmup: bool = True,
    ) -> None:
        torch = require("torch", "the torch inference backend")
        self._torch = torch
        dev = parse_device(device)
        require_cuda_device(self.name, dev)
        if dev.kind == "cuda" and (torch.version.cuda is None or not torch.cuda.is_available()):
            # The GPU is there (counted without torch), this torch cannot use it: a BackendError,
            # so that auto moves on instead of failing inside torch ("not compiled with CUDA").
            build = "a CPU-only build" if torch.version.cuda is None else "unable to use CUDA"
            raise BackendError(
                f"torch {torch.__version__} is {build}; the torch backend on {dev} needs a "
                "CUDA build of torch (pytorch.org), or use the tensorrt or onnxruntime backend"
            )
        spec = package.spec
        weights = package.weights_path
        if weights is None or not package.has_weights():
            raise ModelError(
                f"model package {package.root} has no state dict ({spec.weights_file!r}); the "
                "torch backend needs one (use the onnxruntime backend)"
            )
        if cuda_graphs and dev.kind != "cuda":
            raise ConfigError("cuda_graphs needs device cuda")
        if num_threads is not None:
            if not isinstance(num_threads, int) or num_threads <= 0:
                raise ConfigError(f"num_threads must be a positive integer, got {num_threads!r}")
            torch.set_num_threads(num_threads)
        network = build_network(spec, model_factory)
        from cloudypoints_core.models.weights import load_checkpoint_state

        state = load_checkpoint_state(weights)
        check_state_dict(network, state, spec, str(weights))
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # dtype or other mismatch check_state_dict does not see
            raise ModelError(f"{weights} does not load into the network: {exc}") from exc
        self.device = str(dev)
        self.spec = spec
        self._half = (dev.kind == "cuda") if half is None else bool(half)
        self._dtype = torch.float16 if self._half else torch.float32
        self._device = torch.device(str(dev))
        network = network.to(self._device, dtype=self._dtype).eval()
        self._network = torch.compile(network) if compile else network
        self._shape = (1, 3, spec.input_height, spec.input_width)
        #: The spec's output until a run shows a network returning a dict of named outputs.
        self.output_names: tuple[str, ...] = (spec.output_name,)
        self._graph: Any = None
        self._static_in: Any = None
        self._static_out: Any = None
        if cuda_graphs:
            self._capture_graph()
        elif warmup:
            self.infer(np.zeros(self._shape, dtype=np.float32))

    def _forward(self, x: Any) -> dict[str, Any]:
        """The network's outputs by name: a tensor is the spec's output, a dict names its own."""
        out = self._network(x)
        if isinstance(out, self._torch.Tensor):
            return {self.spec.output_name: out}
        if isinstance(out, Mapping) and all(
            isinstance(k, str) and isinstance(v, self._torch.Tensor) for k, v in out.items()
        ):
            if self.spec.output_name not in out:
                raise ModelError(
                    f"network {self.spec.architecture!r} returned outputs {sorted(out)}, the "
                    f"spec names {self.spec.output_name!r}"
                )
            return dict(out)
        raise ModelError(
            f"network {self.spec.architecture!r} returned {type(out).__name__}, expected a "
            "tensor (B, 1, H, W) or a dict of named tensors"
        )

    def _capture_graph(self) -> None:
        torch = self._torch
        self._static_in = torch.zeros(self._shape, device=self._device, dtype=self._dtype)
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side), torch.inference_mode():
            # Warm-up iterations on a side stream, as CUDA graph capture requires.
            for _ in range(3):
                self._forward(self._static_in)
        torch.cuda.current_stream(self._device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.inference_mode():
            self._static_out = self._forward(self._static_in)
        self._check_output(self._static_out)

    def _check_output(self, outs: dict[str, Any]) -> None:
        out = outs[self.spec.output_name]
        want = (1, 1, self._shape[2], self._shape[3])
        if tuple(out.shape) != want:
            raise ModelError(
                f"network {self.spec.architecture!r} returned shape {tuple(out.shape)}, expected "
                f"{want}"
            )
        self.output_names = tuple(outs)

    def _run(self, batch: npt.NDArray[np.float32]) -> dict[str, Any]:
        validate_batch(batch, self._shape)
        torch = self._torch
        x = torch.from_numpy(batch)
        if self._graph is not None:
            self._static_in.copy_(x)
            self._graph.replay()
            outs: dict[str, Any] = self._static_out
        else:
            outs = self._forward(x.to(self._device, dtype=self._dtype))
        self._check_output(outs)
        return outs

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with self._torch.inference_mode():
            out = self._run(batch)[self.spec.output_name]
            result = out.reshape(self._shape[2], self._shape[3]).float().cpu().numpy()
        return result

    def infer_all(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        torch = self._torch
        result: dict[str, npt.NDArray[Any]] = {}
        with torch.inference_mode():
            for name, out in self._run(batch).items():
                if out.dtype == torch.float16:  # FP16 is this backend's choice, not the model's
                    out = out.float()
                # copy=True: a CUDA-graph output or a tensor the network keeps must not be shared.
                result[name] = out.detach().to("cpu", copy=True).numpy()
        return result

    def close(self) -> None:
        self._graph = None
        self._static_in = self._static_out = None
        self._network = None
