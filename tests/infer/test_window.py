"""Sliding-window inference: window layout, weights, and stitching against whole-image output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pixcore import PixcoreError
from pixcore.infer import sliding_window, window_positions, window_weight_sum, window_weights
from torch import Tensor, nn


class PixelModel(nn.Module):
    """A 1x1 convolution: each output pixel depends on that input pixel only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        out = self.conv(image.float() / 255.0)
        return {"a": out[:, :3], "b": out[:, 3:].exp()}


def test_positions_cover_the_image_with_the_last_window_flush() -> None:
    # 10 rows, window 4, overlap 0.5 -> stride 2: 0, 2, 4, 6 (6 + 4 = 10).
    # 7 columns, window 4 -> stride 2: 0, 2, then 3 (flush with the right border).
    assert window_positions((10, 7), (4, 4), 0.5) == [
        (top, left) for top in (0, 2, 4, 6) for left in (0, 2, 3)
    ]
    assert window_positions((4, 4), (4, 4), 0.5) == [(0, 0)]
    assert window_positions((9, 4), (3, 4), 0.0) == [(0, 0), (3, 0), (6, 0)]


def test_uniform_weight_sum_counts_the_windows_over_each_pixel() -> None:
    rows = np.array([1, 1, 2, 2, 2, 2, 2, 2, 1, 1], dtype=np.float32)  # counted by hand
    cols = np.array([1, 1, 2, 3, 2, 2, 1], dtype=np.float32)
    total = window_weight_sum((10, 7), (4, 4), 0.5, "uniform")
    np.testing.assert_array_equal(total.numpy(), np.outer(rows, cols))


def test_gaussian_weights_follow_the_formula_and_sum_at_the_borders() -> None:
    def axis(n: int) -> np.ndarray:
        sigma = n / 8.0
        i = np.arange(n)
        return np.exp(-((i - (n - 1) / 2.0) ** 2) / (2 * sigma * sigma))

    expected = np.outer(axis(6), axis(4))
    expected /= expected.max()
    np.testing.assert_allclose(window_weights((6, 4), "gaussian").numpy(), expected, rtol=1e-6)

    total = np.zeros((10, 7))
    for top in (0, 3, 4):  # 10 rows, window 6, overlap 0.5 -> stride 3: 0, 3, then 4
        for left in (0, 2, 3):  # 7 columns, window 4, stride 2: 0, 2, then 3
            total[top : top + 6, left : left + 4] += expected
    got = window_weight_sum((10, 7), (6, 4), 0.5, "gaussian")
    np.testing.assert_allclose(got.numpy(), total, rtol=1e-5)
    assert float(got.min()) > 0  # corners too


@pytest.mark.parametrize("weighting", ["uniform", "gaussian"])
@pytest.mark.parametrize(
    ("size", "window", "overlap"),
    [((13, 17), (5, 6), 0.3), ((16, 16), (8, 8), 0.5), ((3, 4), (8, 8), 0.5), ((9, 20), (12, 7), 0.0)],
)
def test_stitched_output_of_a_pixelwise_model_equals_the_whole_image_output(
    size: tuple[int, int], window: tuple[int, int], overlap: float, weighting: str
) -> None:
    model = PixelModel()
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (2, 3, *size), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        whole = model(image)
        stitched = sliding_window(model, image, window, overlap, weighting)  # type: ignore[arg-type]
    assert set(stitched) == {"a", "b"}
    for name in whole:
        assert stitched[name].shape == whole[name].shape
        torch.testing.assert_close(stitched[name], whole[name], rtol=1e-5, atol=1e-5)


def test_a_constant_prediction_stays_constant_up_to_the_borders() -> None:
    # The stitched value is sum(w * v) / sum(w): a constant must come out unchanged at
    # every pixel, including the corners that a single window's tail covers.
    def constant(x: Tensor) -> dict[str, Tensor]:
        return {"c": torch.full((x.shape[0], 2, *x.shape[-2:]), 3.25)}

    image = torch.zeros(1, 3, 21, 30, dtype=torch.uint8)
    out = sliding_window(constant, image, (8, 9), 0.25, "gaussian")["c"]
    assert out.shape == (1, 2, 21, 30)
    torch.testing.assert_close(out, torch.full_like(out, 3.25))


def test_windows_see_the_right_pixels() -> None:
    # An image whose pixel values encode their position: the stitched identity is exact.
    h, w = 11, 14
    grid = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).expand(1, 3, h, w)
    out = sliding_window(lambda x: {"x": x[:, :1]}, grid, (4, 5), 0.5, "uniform")["x"]
    torch.testing.assert_close(out, grid[:, :1])


@pytest.mark.parametrize(
    ("window", "overlap", "weighting", "needle"),
    [((0, 4), 0.5, "uniform", "two positive integers"), ((4, 4), 1.0, "uniform", "0 <= overlap < 1"),
     ((4, 4), 0.5, "cosine", "uniform, gaussian")],
)
def test_bad_settings_are_refused(
    window: tuple[int, int], overlap: float, weighting: Any, needle: str
) -> None:
    with pytest.raises(PixcoreError, match=needle):
        sliding_window(lambda x: {"x": x}, torch.zeros(1, 3, 8, 8), window, overlap, weighting)


def test_an_output_at_another_resolution_is_refused() -> None:
    with pytest.raises(PixcoreError, match="input resolution"):
        sliding_window(lambda x: {"x": x[..., ::2, ::2]}, torch.zeros(1, 3, 8, 8), (4, 4), 0.5)
