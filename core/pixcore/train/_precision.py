"""Mixed precision, memory format, cuDNN autotuning and torch.compile for the trainer.

* ``precision`` ``"bf16"`` / ``"fp16"`` runs the forward pass under ``torch.autocast``:
  matrix products and convolutions in the low-precision type, reductions and
  normalisations in float32 (autocast's own op lists). The parameters, the optimiser
  state and the loss stay float32: the predictions are cast to float32 before the
  losses see them. ``fp16``'s narrow range needs a gradient scaler
  (``torch.amp.GradScaler``, Micikevicius et al. 2018), ``bf16`` (the range of float32)
  does not.
* ``channels_last`` stores the model's 4-d weights and the input images as NHWC, the
  layout fast convolution kernels use (cuDNN with tensor cores, oneDNN on CPU).
* ``compile`` wraps the training forward pass in ``torch.compile``; compilation happens at
  the first call, so errors are caught there and explained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pixcore._errors import PixcoreError

__all__ = [
    "AUTOCAST_DTYPES",
    "CompiledForward",
    "autocast",
    "bf16_is_native",
    "check_precision",
    "configure_cudnn",
    "grad_scaler",
    "to_channels_last",
]

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Raise a clear error if ``device`` cannot run ``precision``."""
    if precision == "32":
        return
    if precision not in AUTOCAST_DTYPES:
        raise PixcoreError(f"trainer.precision={precision!r} is not one of '32', 'bf16', 'fp16'")
    if not torch.amp.is_autocast_available(device.type):
        raise PixcoreError(
            f"trainer.precision={precision!r}: torch.autocast does not support device type "
            f"{device.type!r}; use trainer.precision='32'"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PixcoreError(
            f"trainer.precision='bf16': {torch.cuda.get_device_name(device)} does not support "
            "bfloat16; use 'fp16' (with its gradient scaler) or '32'"
        )


def bf16_is_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware, where ``bf16`` makes steps faster.

    CUDA: bf16 without emulation (Ampere and later). x86 CPUs: AVX512-BF16 or AMX, the
    instructions oneDNN's bf16 convolutions need; without them it emulates bf16, which is
    slower than float32 (a step of ``pixcore demo`` on an AMD EPYC took 1.9x as long as in
    float32 with oneDNN limited to AVX-512 without BF16, 8.9x limited to AVX2). Anything
    else (MPS, ARM CPUs, which torch offers no check for): False.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # torch's own checks of the CPU's instructions (cpuinfo); private, but the only ones.
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``bf16``/``fp16``; a no-op context for ``32``."""
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for ``fp16`` (None otherwise).

    Its state (scale, growth tracker) goes into the checkpoint, so a resumed run scales
    exactly as the uninterrupted one would.
    """
    if precision != "fp16":
        return None
    try:
        return torch.amp.GradScaler(device.type)
    except Exception as error:  # a device type without a scaler implementation
        raise PixcoreError(
            f"trainer.precision='fp16' needs a gradient scaler, which PyTorch does not provide for "
            f"{device.type!r} ({error}); use 'bf16' (no scaler needed) or '32'"
        ) from error


def configure_cudnn(setting: bool | None, device: torch.device) -> None:
    """Set ``torch.backends.cudnn.benchmark`` for a CUDA run (default: on); no-op elsewhere.

    Autotuning picks the fastest convolution algorithm for each new input shape: a win for
    fixed-size crops, a loss when every batch has another size.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True if setting is None else setting


def to_channels_last(image: Tensor) -> Tensor:
    """``image`` in NHWC memory order (4-d tensors only; others are returned as they are)."""
    return image.contiguous(memory_format=torch.channels_last) if image.ndim == 4 else image


class CompiledForward:
    """``torch.compile(module)``, whose compilation errors say how to train without it.

    Compilation runs at the first call (and again when shapes or modes change); an
    error from dynamo or inductor is re-raised as a :class:`PixcoreError` that names the
    setting to turn off. Other errors pass through unchanged.
    """

    def __init__(self, module: nn.Module, backend: str) -> None:
        self.backend = backend
        try:
            self.compiled: Callable[..., Any] = torch.compile(module, backend=backend)
        except Exception as error:
            raise self._error(error) from error
        self._first_call = True

    def __call__(self, *args: Any) -> Any:
        try:
            out = self.compiled(*args)
        except Exception as error:
            if self._first_call or _from_compiler(error):
                raise self._error(error) from error
            raise
        self._first_call = False
        return out

    def _error(self, error: Exception) -> PixcoreError:
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        return PixcoreError(
            f"torch.compile (backend {self.backend!r}) failed on the training forward pass "
            f"({type(error).__name__}: {first_line}). Train without it: set trainer.compile=false "
            "(or --set trainer.compile=false). The 'inductor' backend needs a C++ compiler (and "
            "Triton on GPUs); trainer.compile_backend='aot_eager' helps to find the failing part."
        )


def _from_compiler(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor"))
