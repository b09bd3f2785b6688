"""pixcore.viz: palettes, colour maps, normal pictures and grids against known values."""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pixcore import viz

# The Pascal VOC 2012 class colours (label id -> RGB), as in the development kit's
# ground-truth PNGs; 255 ("void") marks unlabelled pixels there.
VOC_COLOURS = [
    (0, 0, 0),        # 0 background
    (128, 0, 0),      # 1 aeroplane
    (0, 128, 0),      # 2 bicycle
    (128, 128, 0),    # 3 bird
    (0, 0, 128),      # 4 boat
    (128, 0, 128),    # 5 bottle
    (0, 128, 128),    # 6 bus
    (128, 128, 128),  # 7 car
    (64, 0, 0),       # 8 cat
    (192, 0, 0),      # 9 chair
    (64, 128, 0),     # 10 cow
    (192, 128, 0),    # 11 dining table
    (64, 0, 128),     # 12 dog
    (192, 0, 128),    # 13 horse
    (64, 128, 128),   # 14 motorbike
    (192, 128, 128),  # 15 person
    (0, 64, 0),       # 16 potted plant
    (128, 64, 0),     # 17 sheep
    (0, 192, 0),      # 18 sofa
    (128, 192, 0),    # 19 train
    (0, 64, 128),     # 20 tv/monitor
]
VOC_VOID = (224, 224, 192)

# Entries of Google's published 256-entry Turbo table (index -> sRGB in [0, 1]), at
# indices that are not among the interpolation anchors of pixcore.viz.turbo.
TURBO_TABLE = {
    20: (0.26074, 0.29568, 0.71162),
    60: (0.18625, 0.69775, 0.95498),
    100: (0.24797, 0.96423, 0.54303),
    130: (0.66428, 0.98524, 0.22370),
    170: (0.98000, 0.73000, 0.22161),
    203: (0.94538, 0.36638, 0.07461),
    250: (0.54583, 0.03593, 0.00638),
}


def _distinct(colours: np.ndarray) -> int:
    return len({tuple(c) for c in colours.tolist()})


def _hues(picture: np.ndarray) -> np.ndarray:
    return np.array([colorsys.rgb_to_hsv(*c)[0] for c in picture.reshape(-1, 3) / 255.0])


# -- class palette and masks -----------------------------------------------------------


def test_palette_matches_the_voc_colours() -> None:
    palette = viz.class_palette(21)
    assert palette.dtype == np.uint8 and palette.shape == (21, 3)
    assert [tuple(c) for c in palette.tolist()] == VOC_COLOURS
    assert tuple(viz.class_palette(256)[255].tolist()) == VOC_VOID == viz.VOID_COLOR


@pytest.mark.parametrize("n", [0, 1, 150, 256, 1000])
def test_palette_colours_are_distinct_for_any_class_count(n: int) -> None:
    palette = viz.class_palette(n)
    assert palette.shape == (n, 3) and _distinct(palette) == n
    assert np.array_equal(palette, viz.class_palette(1000)[:n])  # a prefix of one sequence


def test_palette_refuses_bad_counts() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        viz.class_palette(-1)
    with pytest.raises(ValueError, match=r"2\*\*24"):
        viz.class_palette((1 << 24) + 1)
    with pytest.raises(TypeError, match="int"):
        viz.class_palette(2.5)  # type: ignore[arg-type]


def test_colorize_mask_classes_ignore_out_of_range_and_invalid() -> None:
    ids = np.array([[0, 1, 15], [255, 20, 21], [-1, 7, 3]])
    valid = np.array([[True, True, True], [True, True, True], [True, True, False]])
    picture = viz.colorize_mask(ids, 21, valid=valid)
    assert picture.dtype == np.uint8 and picture.shape == (3, 3, 3)
    expected = [
        [VOC_COLOURS[0], VOC_COLOURS[1], VOC_COLOURS[15]],
        [VOC_VOID, VOC_COLOURS[20], VOC_VOID],  # ignore index; 21 is not a class
        [VOC_VOID, VOC_COLOURS[7], VOC_VOID],  # negative id; invalid pixel
    ]
    assert picture.tolist() == [[list(c) for c in row] for row in expected]


def test_colorize_mask_takes_tensors_and_an_ignore_index_inside_the_classes() -> None:
    ids = torch.tensor([[[0, 1], [2, 3]]])  # [1, H, W]
    valid = torch.ones(2, 2, dtype=torch.bool)
    picture = viz.colorize_mask(ids, 4, ignore_index=0, valid=valid)
    assert picture[0, 0].tolist() == list(VOC_VOID)
    assert [tuple(c) for c in picture.reshape(-1, 3)[1:].tolist()] == VOC_COLOURS[1:4]
    assert viz.colorize_mask(ids, 4, ignore_index=None)[0, 0].tolist() == [0, 0, 0]


def test_colorize_mask_with_many_classes_uses_a_free_invalid_colour() -> None:
    ids = np.arange(1000).reshape(25, 40)
    ids[0, 0] = 255  # class 255 has the VOC void colour here, so the ignore index is 1000+
    picture = viz.colorize_mask(ids, 1000, ignore_index=999)
    colours = picture.reshape(-1, 3)
    assert _distinct(colours) == 999  # classes 1..998 (255 among them) and the invalid colour
    assert tuple(picture[24, 39].tolist()) == (255, 255, 255)  # id 999 ignored: white
    assert tuple(picture[0, 0].tolist()) == VOC_VOID  # class 255 keeps its palette colour


def test_colorize_mask_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="argmax"):
        viz.colorize_mask(np.zeros((2, 2), dtype=np.float32), 3)
    with pytest.raises(ValueError, match=r"valid has shape \(3, 3\)"):
        viz.colorize_mask(np.zeros((2, 2), dtype=np.int64), 3, valid=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="colour of class 0"):
        viz.colorize_mask(np.zeros((2, 2), dtype=np.int64), 3, invalid_color=(0, 0, 0))
    with pytest.raises(ValueError, match="K >= num_classes = 3"):
        viz.colorize_mask(np.zeros((2, 2), dtype=np.int64), 3, palette=np.zeros((2, 3)))


def test_colorize_mask_with_a_custom_palette_and_invalid_colour() -> None:
    palette = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    ids = np.array([[0, 1, 255]])
    picture = viz.colorize_mask(ids, 2, palette=palette, invalid_color=(0, 0, 0))
    assert picture.tolist() == [[[10, 20, 30], [40, 50, 60], [0, 0, 0]]]


# -- depth -----------------------------------------------------------------------------


def test_turbo_matches_the_published_table() -> None:
    indices = sorted(TURBO_TABLE)
    colours = viz.turbo(np.array(indices) / 255.0).astype(int)
    reference = np.round(np.array([TURBO_TABLE[i] for i in indices]) * 255.0)
    assert np.abs(colours - reference).max() <= 3  # 2/255 interpolation + rounding
    ends = viz.turbo(np.array([0.0, 1.0])).tolist()
    assert ends == [[48, 18, 59], [122, 4, 3]]  # round(255 x first and last entries)


def test_turbo_hue_falls_monotonically_and_never_black() -> None:
    colours = viz.turbo(np.linspace(0.0, 1.0, 64)) / 255.0
    hues = np.array([colorsys.rgb_to_hsv(*c)[0] * 360.0 for c in colours])
    assert hues[0] > 270.0 and hues[-1] < 10.0
    assert (np.diff(hues) < 0).all()
    assert (viz.turbo(np.linspace(0, 1, 1001)).astype(int).sum(axis=1) > 0).all()
    clipped = viz.turbo(np.array([-3.0, math.nan, 7.0]))
    assert np.array_equal(clipped, viz.turbo(np.array([0.0, 0.0, 1.0])))


def test_colorize_depth_maps_near_to_blue_far_to_red_and_invalid_to_black() -> None:
    depth = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, math.nan], [math.inf, 2.0, 2.5]])
    valid = np.ones((3, 3), bool)
    valid[2, 1] = False
    picture = viz.colorize_depth(depth, valid, value_range=(1.0, 3.0))
    assert picture.dtype == np.uint8 and picture.shape == (3, 3, 3)
    assert picture[0].tolist() == viz.turbo(np.array([0.0, 0.5, 1.0])).tolist()
    assert picture[2, 2].tolist() == viz.turbo(np.array([0.75]))[0].tolist()
    for y, x in [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]:  # zero, negative, NaN, inf, invalid
        assert picture[y, x].tolist() == list(viz.INVALID_COLOR) == [0, 0, 0]


def test_colorize_depth_gray_is_monotone_in_every_channel() -> None:
    depth = torch.linspace(0.5, 8.0, 40).reshape(1, 5, 8)  # [1, H, W] tensor
    picture = viz.colorize_depth(depth, colormap="gray", value_range=(0.5, 8.0))
    levels = picture.reshape(-1, 3).astype(int)
    assert (levels[:, 0] == levels[:, 1]).all() and (levels[:, 1] == levels[:, 2]).all()
    assert (np.diff(levels[:, 0]) >= 0).all() and levels[0, 0] == 40 and levels[-1, 0] == 255


def test_depth_range_is_the_2nd_to_98th_percentile_of_kept_pixels() -> None:
    depth = np.arange(1.0, 101.0).reshape(10, 10)  # 1..100
    depth[0, 0] = 0.0  # not a depth: left out
    low, high = viz.depth_range(depth)
    # numpy's linear percentile of 2..100 (99 values): position q/100 * 98.
    assert (low, high) == pytest.approx((2.0 + 0.02 * 98, 2.0 + 0.98 * 98))
    assert viz.depth_range(np.zeros((2, 2))) == (0.0, 1.0)


def test_a_shared_range_makes_colours_comparable() -> None:
    target = np.linspace(1.0, 5.0, 64).reshape(8, 8)
    shared = viz.depth_range(target)
    own = viz.colorize_depth(2 * target)
    farther = viz.colorize_depth(2 * target, value_range=shared)
    truth = viz.colorize_depth(target, value_range=shared)
    assert np.array_equal(own, truth)  # alone, twice as far looks the same
    assert not np.array_equal(farther, truth)
    assert (_hues(farther) <= _hues(truth) + 1e-9).all()  # never bluer, mostly redder
    assert (_hues(farther) < _hues(truth) - 1e-3).mean() > 0.5


def test_colorize_depth_errors_are_clear() -> None:
    depth = np.ones((2, 2))
    with pytest.raises(ValueError, match="unknown colormap 'jet'; available: gray, turbo"):
        viz.colorize_depth(depth, colormap="jet")
    with pytest.raises(ValueError, match="low <= high"):
        viz.colorize_depth(depth, value_range=(3.0, 1.0))
    with pytest.raises(ValueError, match=r"\[H, W\] depth"):
        viz.colorize_depth(np.ones((2, 2, 2)))
    constant = viz.colorize_depth(depth)
    assert (constant == viz.turbo(np.array([0.5]))[0]).all()


# -- normals ---------------------------------------------------------------------------


def test_normals_to_rgb_exact_colours() -> None:
    vectors = [
        (1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0), (-1.0, 0.0, 0.0),
        (0.6, 0.0, -0.8), (0.0, 3.0, 4.0),  # (0, 0.6, 0.8) after normalising
        (0.0, 0.0, 0.0), (math.nan, 0.0, 1.0), (0.0, 0.0, 1.0),
    ]
    normals = torch.tensor(vectors).T.reshape(3, 3, 3)
    valid = torch.ones(3, 3, dtype=torch.bool)
    valid[2, 2] = False
    picture = viz.normals_to_rgb(normals, valid)
    assert picture.dtype == np.uint8 and picture.shape == (3, 3, 3)
    expected = [
        (255, 128, 128), (128, 0, 128), (128, 128, 0), (0, 128, 128),
        (204, 128, 26),  # 1.6 * 127.5 = 204; 0.2 * 127.5 = 25.5 rounds up
        (128, 204, 230),  # 229.5 rounds up
        (0, 0, 0), (0, 0, 0), (0, 0, 0),  # zero, not finite, invalid
    ]
    assert [tuple(c) for c in picture.reshape(-1, 3).tolist()] == expected


def test_normals_to_rgb_random_vectors_match_a_per_pixel_loop() -> None:
    g = torch.Generator().manual_seed(0)
    normals = torch.randn(3, 5, 6, generator=g, dtype=torch.float64) * 2.0
    picture = viz.normals_to_rgb(normals)
    for y in range(5):
        for x in range(6):
            n = normals[:, y, x].tolist()
            length = math.sqrt(sum(c * c for c in n))
            expected = [int(math.floor((c / length + 1.0) * 127.5 + 0.5)) for c in n]
            assert picture[y, x].tolist() == expected
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        viz.normals_to_rgb(normals.permute(1, 2, 0))


# -- images and grids ------------------------------------------------------------------


def test_image_to_rgb() -> None:
    chw = np.arange(24, dtype=np.uint8).reshape(3, 2, 4)
    assert np.array_equal(viz.image_to_rgb(chw), chw.transpose(1, 2, 0))
    floats = torch.tensor([[[0.0, 0.5, 1.0, 2.0]]])  # [1, H, W] float, clipped
    assert viz.image_to_rgb(floats)[0].tolist() == [[0] * 3, [128] * 3, [255] * 3, [255] * 3]


def test_make_grid_layout_and_save(tmp_path: Path) -> None:
    red = np.zeros((4, 5, 3), dtype=np.uint8)
    red[..., 0] = 255
    blue = np.zeros((4, 5, 3), dtype=np.uint8)
    blue[..., 2] = 255
    grid = viz.make_grid([[red, blue], [blue]], ["a", "b"], scale=2, pad=4)
    assert grid.size == (2 * (10 + 4) + 4, 16 + 2 * (8 + 4) + 4)
    pixels = np.asarray(grid)
    assert (pixels[20:28, 4:14] == [255, 0, 0]).all()  # row 0, column 0 at (pad, header + pad)
    assert (pixels[20:28, 18:28] == [0, 0, 255]).all()  # row 0, column 1
    assert (pixels[32:40, 4:14] == [0, 0, 255]).all()  # row 1, column 0
    assert (pixels[32:40, 18:28] == 255).all()  # no panel: white
    path = viz.save_grid(tmp_path / "sub" / "grid.png", [[red, blue]], ["a", "b"])
    expected = np.asarray(viz.make_grid([[red, blue]], ["a", "b"]))
    assert np.array_equal(np.asarray(Image.open(path)), expected)


def test_make_grid_refuses_panels_that_are_not_rgb_uint8() -> None:
    with pytest.raises(ValueError, match=r"panel 1 of row 0 is float64 \(4, 5\)"):
        viz.make_grid([[np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5))]], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        viz.make_grid([], [])
