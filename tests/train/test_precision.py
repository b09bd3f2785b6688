"""Mixed precision (bf16, fp16 with its scaler), channels-last, torch.compile, cuDNN setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
import train_toy
from pixcore import RunConfig
from pixcore.train import Callback, Trainer, bf16_is_native, read_metadata, train
from pixcore.train._precision import configure_cudnn
from safetensors import safe_open
from torch import Tensor, nn


def _config(steps: int = 3, norm: bool = True, **trainer: Any) -> RunConfig:
    return RunConfig.model_validate(train_toy.run_config(steps=steps, length=12, norm=norm, **trainer))


def _equal(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_bf16_autocast_trains_on_cpu_with_float32_parameters() -> None:
    manager = train_toy.toy_manager()
    torch.manual_seed(0)
    initial = pixcore.build_model_from_config(_config().model, manager=manager).state_dict()
    dtypes: list[torch.dtype] = []

    class Spy(Callback):
        def on_fit_start(self, trainer: Trainer) -> None:
            conv = trainer.model.backbone.a[0]
            conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype) if m.training else None)

    trainer, result = train(_config(precision="bf16"), None, manager, callbacks=[Spy()])
    assert dtypes and set(dtypes) == {torch.bfloat16}, "the convolutions ran in bfloat16"
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, initial[k])]
    assert any("weight" in k for k in changed), "the weights trained"
    assert 0 < result.metrics["brightness"]["mae"] < 1


def _fp16_supported() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            out = nn.Conv2d(3, 2, 3)(torch.ones(1, 3, 5, 5))
        torch.amp.GradScaler("cpu")
    except Exception:
        return False
    return out.dtype == torch.float16


class Killed(Exception):
    pass


class KillAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if trainer.step == self.step:
            raise Killed


@pytest.mark.skipif(not _fp16_supported(), reason="this PyTorch has no float16 autocast / GradScaler on CPU")
def test_fp16_with_grad_scaler_resumes_exactly(tmp_path: Path) -> None:
    manager = train_toy.toy_manager()
    settings = {"precision": "fp16", "steps": 5, "checkpoint_every": 2, "grad_clip": 1.0}
    whole, _ = train(_config(**settings), tmp_path / "whole", manager)
    assert whole.scaler is not None
    with pytest.raises(Killed):
        train(_config(**settings), tmp_path / "cut", manager, callbacks=[KillAfter(3)])
    checkpoint = tmp_path / "cut" / "checkpoint.safetensors"
    state = read_metadata(checkpoint)["grad_scaler"]
    assert state["scale"] > 1 and {"growth_factor", "_growth_tracker"} <= state.keys()
    resumed, _ = train(_config(**settings), tmp_path / "cut", manager, resume=checkpoint)
    assert resumed.scaler is not None
    assert resumed.scaler.state_dict() == whole.scaler.state_dict()
    assert _equal(whole.model, resumed.model)


@pytest.mark.skipif(not _fp16_supported(), reason="this PyTorch has no float16 autocast / GradScaler on CPU")
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_gradients_are_unscaled_before_clipping() -> None:
    # Clipped to 1e-3 (always active here): at the optimiser step the gradient norm must be
    # 1e-3 in true units. Clipping the scaled gradients would leave 1e-3 / scale.
    manager = train_toy.toy_manager()
    norms: list[float] = []

    class Watch(Callback):
        def on_fit_start(self, trainer: Trainer) -> None:
            step = trainer.optimizer.step

            def watched(*args: Any, **kwargs: Any) -> Any:
                grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
                norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
                return step(*args, **kwargs)

            trainer.optimizer.step = watched  # type: ignore[method-assign]

    train(_config(precision="fp16", grad_clip=1e-3), None, manager, callbacks=[Watch()])
    assert norms, "at least one step was not skipped by the scaler"
    for norm in norms:
        assert norm == pytest.approx(1e-3, rel=1e-3)


def test_channels_last_matches_contiguous() -> None:
    # No BatchNorm in the backbone: a bias right before BatchNorm has a zero gradient up to
    # rounding, which AdamW turns into full-size steps of noise in both runs alike.
    manager = train_toy.toy_manager()
    plain, plain_result = train(_config(norm=False), None, manager)
    nhwc, nhwc_result = train(_config(norm=False, channels_last=True), None, manager)
    conv = nhwc.model.backbone.a[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for (name, a), b in zip(plain.model.state_dict().items(), nhwc.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    expected = plain_result.metrics["brightness"]["mae"]
    assert nhwc_result.metrics["brightness"]["mae"] == pytest.approx(expected, rel=1e-4)


def test_compile_trains_the_same_weights_and_saves_the_plain_model(tmp_path: Path) -> None:
    # The 'eager' backend runs dynamo's tracing without generating code (fast, no compiler).
    manager = train_toy.toy_manager()
    plain, _ = train(_config(), None, manager)
    compiled, _ = train(_config(compile=True, compile_backend="eager"), tmp_path, manager)
    assert type(compiled.model) is pixcore.MultiTaskModel, "the saved model is the uncompiled one"
    pairs = zip(plain.model.state_dict().items(), compiled.model.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    with safe_open(str(tmp_path / "checkpoint.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())  # noqa: SIM118
    assert keys and not any("_orig_mod" in k for k in keys)


def test_a_failing_compilation_says_how_to_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(module: nn.Module, **kwargs: Any) -> Any:
        def run(*args: Any) -> Any:
            raise RuntimeError("no C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(pixcore.PixcoreError, match=r"no C\+\+ compiler found.*trainer.compile=false"):
        train(_config(compile=True), None, train_toy.toy_manager())


def test_cudnn_benchmark_defaults_to_on_for_cuda_only() -> None:
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        configure_cudnn(None, torch.device("cpu"))
        assert torch.backends.cudnn.benchmark is False
        configure_cudnn(None, torch.device("cuda"))
        assert torch.backends.cudnn.benchmark is True
        configure_cudnn(False, torch.device("cuda"))
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved


def test_precision_accepts_the_number_32() -> None:
    assert pixcore.TrainerConfig.model_validate({"precision": 32}).precision == "32"
    with pytest.raises(Exception, match="precision"):
        pixcore.TrainerConfig.model_validate({"precision": "fp8"})


@pytest.mark.parametrize(("avx512_bf16", "amx", "native"), [(True, False, True), (False, True, True),
                                                              (False, False, False)])
def test_bf16_is_native_on_cpus_with_bf16_instructions(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, native: bool
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert bf16_is_native(torch.device("cpu")) is native


def test_bf16_is_native_on_cuda_only_without_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []

    def emulating_gpu(including_emulation: bool = True) -> bool:  # e.g. a T4: bf16 only emulated
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulating_gpu)
    assert bf16_is_native(torch.device("cuda")) is False and asked == [False]
    assert bf16_is_native(torch.device("mps")) is False
