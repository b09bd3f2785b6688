"""Test-time augmentation: flips undone per target kind, averaging per kind, windows inside.

The fake models here predict known functions of the image (or of the pixel position),
so every expectation is computed by hand with numpy, not by the code under test.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pixcore import PixcoreError
from pixcore.augment import UnsupportedKindError
from pixcore.infer import Predictor, merge_mode
from pixcore.targets import ClassMask, ScalarField, TargetKind, UnitVectorField
from torch import Tensor, nn

H, W = 6, 9


class Flow(TargetKind):
    """A kind without a flip rule."""

    kind = "test_flow"


def _bindings(**kinds: type[TargetKind]) -> dict[str, SimpleNamespace]:
    return {
        name: SimpleNamespace(task=SimpleNamespace(target_kind=kind)) for name, kind in kinds.items()
    }


class EquivariantModel(nn.Module):
    """Commutes with a horizontal flip, normals' x included.

    Segmentation logits and depth are per-pixel functions of the colour; the normal's x
    is the horizontal central difference of the grey level (with repeated borders),
    which changes sign under a mirror exactly as a normal's x does.
    """

    bindings: ClassVar = _bindings(semseg=ClassMask, depth=ScalarField, normals=UnitVectorField)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x = image.float() / 255.0
        out = self.conv(x)
        grey = F.pad(x.mean(1, keepdim=True), (1, 1, 0, 0), mode="replicate")
        gx = grey[..., 2:] - grey[..., :-2]
        normals = torch.cat([gx, torch.full_like(gx, 0.3), -torch.ones_like(gx)], dim=1)
        return {"semseg": out[:, :3], "depth": F.softplus(out[:, 3:]),
                "normals": F.normalize(normals, dim=1)}


class PositionModel(nn.Module):
    """Not equivariant: predicts functions of the column index ``u``, whatever the image.

    * semseg: logits ``(3 u / W, 0)``;
    * depth: ``u + 1``;
    * normals: ``normalize((u + 1) / W, 0, -1)``, always facing right (x > 0).
    """

    bindings: ClassVar = _bindings(semseg=ClassMask, depth=ScalarField, normals=UnitVectorField)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        b, _, h, w = image.shape
        u = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(b, 1, h, w)
        logits = torch.cat([3.0 * u / w, torch.zeros_like(u)], dim=1)
        normals = torch.cat([(u + 1) / w, torch.zeros_like(u), -torch.ones_like(u)], dim=1)
        return {"semseg": logits, "depth": u + 1.0, "normals": F.normalize(normals, dim=1)}


def _image(seed: int = 0, size: tuple[int, int] = (H, W)) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (2, 3, *size), generator=g, dtype=torch.uint8)


def test_merge_modes_follow_the_target_kind() -> None:
    assert merge_mode(ClassMask) == "probabilities"
    assert merge_mode(UnitVectorField) == "unit_vectors"
    assert merge_mode(ScalarField) == "mean"
    assert merge_mode(Flow) == "mean"


def test_without_options_the_model_output_is_returned_unchanged() -> None:
    model = EquivariantModel()
    image = _image()
    predictor = Predictor(model)
    assert predictor.plain and predictor.bindings is model.bindings
    with torch.no_grad():
        torch.testing.assert_close(predictor(image)["semseg"], model(image)["semseg"])


def test_flip_tta_of_an_equivariant_model_is_its_plain_prediction() -> None:
    model = EquivariantModel()
    image = _image()
    with torch.no_grad():
        plain = model(image)
        tta = Predictor(model, hflip=True)(image)
    # Segmentation comes back as log-probabilities: same probabilities as the logits.
    torch.testing.assert_close(tta["semseg"].exp().sum(1), torch.ones(2, H, W))
    torch.testing.assert_close(tta["semseg"], plain["semseg"].log_softmax(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tta["depth"], plain["depth"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(tta["normals"], plain["normals"], atol=1e-6, rtol=1e-6)
    assert bool((plain["normals"][:, 0].abs() > 1e-3).any())  # x is not trivially zero


def test_flip_tta_mirrors_back_by_the_kind_rules() -> None:
    with torch.no_grad():
        tta = Predictor(PositionModel(), hflip=True)(_image())
    u = np.arange(W, dtype=np.float64)
    mirrored_u = W - 1 - u  # the mirrored pass predicted at column W-1-u what lands on u

    # Depth: the mean of (u + 1) and (W - 1 - u) + 1.
    np.testing.assert_allclose(tta["depth"][0, 0].numpy(), np.tile((W + 1) / 2.0, (H, W)), rtol=1e-6)

    # Normals: the mirrored pass says "facing right" at column W-1-u; mirrored back, that
    # faces LEFT: x = -(W - u) / W. Averaged with the plain ((u + 1) / W, 0, -1), renormalised.
    def unit(x: np.ndarray) -> np.ndarray:
        v = np.stack([x, np.zeros_like(x), -np.ones_like(x)])
        return v / np.linalg.norm(v, axis=0)

    plain = unit((u + 1) / W)
    back = unit((mirrored_u + 1) / W) * np.array([-1.0, 1.0, 1.0])[:, None]
    mean = (plain + back) / 2
    expected = mean / np.linalg.norm(mean, axis=0)
    got = tta["normals"][0, :, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[0, 0] < 0 < got[0, -1]  # left border faces left, right border faces right
    np.testing.assert_allclose(np.linalg.norm(tta["normals"].numpy(), axis=1), 1.0, rtol=1e-6)

    # Segmentation: probabilities (not logits) are averaged; log of the mean is returned.
    def softmax(z0: np.ndarray) -> np.ndarray:
        z = np.stack([z0, np.zeros_like(z0)])
        e = np.exp(z - z.max(0))
        return e / e.sum(0)

    probabilities = (softmax(3 * u / W) + softmax(3 * mirrored_u / W)) / 2
    np.testing.assert_allclose(tta["semseg"][0, :, 0].exp().numpy(), probabilities, rtol=1e-5)
    averaged_logits = softmax((3 * u / W + 3 * mirrored_u / W) / 2)  # what logit averaging gives
    assert not np.allclose(probabilities, averaged_logits, rtol=1e-3)


def test_multi_scale_of_a_pixelwise_model_on_a_flat_image_is_the_plain_prediction() -> None:
    # A flat image stays flat at every scale, so a per-pixel model predicts the same.
    model = EquivariantModel()
    image = torch.full((1, 3, 12, 16), 77, dtype=torch.uint8)
    with torch.no_grad():
        plain = model(image)
        merged = Predictor(model, hflip=True, scales=(0.5, 1.0, 1.5))(image)
    assert merged["depth"].shape == (1, 1, 12, 16)
    torch.testing.assert_close(merged["depth"], plain["depth"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged["semseg"], plain["semseg"].log_softmax(1), atol=1e-5, rtol=1e-5)


def test_windows_with_tta_of_an_equivariant_pixelwise_model_are_the_plain_prediction() -> None:
    model = EquivariantModel()
    model.forward = lambda image: {  # type: ignore[method-assign]
        k: v for k, v in EquivariantModel.forward(model, image).items() if k != "normals"
    }  # the normals' finite difference reaches one pixel beyond a window
    image = _image(3, (13, 18))
    with torch.no_grad():
        plain = model(image)
        merged = Predictor(model, hflip=True, window=(5, 7), overlap=0.4, weighting="gaussian")(image)
    torch.testing.assert_close(merged["semseg"], plain["semseg"].log_softmax(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged["depth"], plain["depth"], atol=1e-5, rtol=1e-5)


def test_window_stitching_renormalises_normals() -> None:
    class Opposite(nn.Module):
        """Windows disagree: each predicts a normal tilted towards its own left edge."""

        bindings: ClassVar = _bindings(normals=UnitVectorField)

        def forward(self, image: Tensor) -> dict[str, Tensor]:
            b, _, h, w = image.shape
            x = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(b, 1, h, w)
            vectors = torch.cat([x, torch.zeros_like(x), -torch.ones_like(x)], 1)
            return {"normals": F.normalize(vectors, dim=1)}

    with torch.no_grad():
        out = Predictor(Opposite(), window=(4, 6), overlap=0.5)(torch.zeros(1, 3, 8, 15))["normals"]
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1, 8, 15))


def test_a_kind_without_a_flip_rule_cannot_use_flip_tta() -> None:
    class FlowModel(nn.Module):
        bindings: ClassVar = _bindings(flow=Flow)

    with pytest.raises(UnsupportedKindError, match="register_rule") as error:
        Predictor(FlowModel(), hflip=True)
    assert "'flow'" in str(error.value) and "test_flow" in str(error.value)
    Predictor(FlowModel(), window=(4, 4))  # no flip: fine


def test_bad_options_are_refused() -> None:
    with pytest.raises(PixcoreError, match="positive scale"):
        Predictor(EquivariantModel(), scales=(0.0,))
    with pytest.raises(PixcoreError, match="task bindings"):
        Predictor(nn.Conv2d(3, 3, 1))
