"""Property checks for augmentations and target kinds, shipped for plugin authors.

One call runs a whole suite of properties over random samples (sizes, dtypes, contents)
drawn with hypothesis::

    from pixcore.testing._augment_checks import check_augmentation, check_target_kind

    def test_my_transform():
        check_augmentation(lambda: MyTransform(p=1.0))

    def test_my_kind():
        check_target_kind(EdgeMap, lambda h, w, g: EdgeMap(torch.rand(1, h, w, generator=g) > 0.5))

How it works: every sample carries a hidden *tracker*, a class mask whose values encode
each input pixel's index. After the transform, the tracker says where every output
pixel came from (or that it was filled), and the other targets are checked against that
map: class masks, depth, normals and validity masks must carry the values of the same
input pixel (nearest neighbour), normals must be rotated or mirrored like the camera,
filled pixels must be invalid, intrinsics must reproject input pixels onto their output
positions, and so on. See :func:`check_augmentation_once` for the full list.

Hypothesis is needed only when a check runs (it is in pixcore's ``test`` extra).
Profiles: :func:`load_hypothesis_profile` registers ``ci`` (25 examples per check),
``dev`` (200) and ``thorough`` (2000) and loads the one named by the environment
variable ``HYPOTHESIS_PROFILE`` (default ``ci``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from pixcore._interfaces import Augmentation, Sample
from pixcore._targets import (
    ClassMask,
    Image,
    Intrinsics,
    ScalarField,
    TargetKind,
    UnitVectorField,
    ValidityMask,
)
from pixcore.augment._geometry import Crop, Flip, Geometry, Warp
from pixcore.augment._rules import rule_for
from pixcore.testing._contract import ContractError, require

__all__ = [
    "PROFILE_ENV",
    "AlienKind",
    "DepthScaling",
    "builtin_transforms",
    "check_augmentation",
    "check_augmentation_once",
    "check_target_kind",
    "load_hypothesis_profile",
    "random_sample",
    "sample_strategy",
]

#: Environment variable naming the hypothesis profile (``ci``, ``dev``, ``thorough``).
PROFILE_ENV = "HYPOTHESIS_PROFILE"
_PROFILES = {"ci": 25, "dev": 200, "thorough": 2000}

#: Tracker values are ``OFFSET + flat input index``: above any class id or fill, and
#: exact in float32 (a transform may resample masks through floats).
_OFFSET = 1 << 20
_TRACK = "__pixcore_tracker__"
_ALIEN = "__pixcore_alien__"

#: How depth values relate across a zoom: ``"keep"`` (metric z is unchanged: a zoom is a
#: focal-length change) or ``"divide"`` (divided by the zoom, Eigen et al. 2014).
DepthScaling = Literal["keep", "divide"]

KindMaker = Callable[[int, int, torch.Generator], TargetKind]
Relation = Callable[[Tensor, Tensor, Tensor], None]


class AlienKind(TargetKind):
    """A target kind no transform has a rule for: transforms must refuse it or not move."""

    kind = "pixcore_test_alien"


# --------------------------------------------------------------------------------------
# Hypothesis: profiles and strategies
# --------------------------------------------------------------------------------------


def _hypothesis() -> Any:
    try:
        import hypothesis
    except ImportError as error:  # pragma: no cover - hypothesis is in the test extra
        raise ImportError(
            "the augmentation property checks need hypothesis: pip install 'pixcore[test]'"
        ) from error
    return hypothesis


def load_hypothesis_profile(name: str | None = None) -> str:
    """Register pixcore's hypothesis profiles and load ``name`` (default: ``$HYPOTHESIS_PROFILE`` or ``ci``).

    ``ci`` runs 25 examples per check, ``dev`` 200, ``thorough`` 2000; none has a
    deadline or writes an example database. Returns the loaded profile's name.
    """
    hypothesis = _hypothesis()
    settings, health = hypothesis.settings, hypothesis.HealthCheck
    for profile, examples in _PROFILES.items():
        settings.register_profile(
            profile,
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[health.too_slow, health.data_too_large],
            print_blob=False,
        )
    chosen = name or os.environ.get(PROFILE_ENV, "ci")
    if chosen not in _PROFILES:
        raise ValueError(f"unknown hypothesis profile {chosen!r}; choose one of {', '.join(_PROFILES)}")
    settings.load_profile(chosen)
    return chosen


def random_sample(
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    image_dtype: torch.dtype = torch.uint8,
    mask_dtype: torch.dtype = torch.int64,
    float_dtype: torch.dtype = torch.float32,
    valid_fraction: float = 0.8,
    kinds: Sequence[str] = ("image", "mask", "depth", "normals", "valid", "intrinsics"),
) -> Sample:
    """A random typed sample of ``height x width``.

    ``image``: uint8 or float in [0, 1]; ``mask``: a few class ids and the ignore index
    255; ``depth``: positive on valid pixels, arbitrary finite values elsewhere;
    ``normals``: unit vectors facing the camera on valid pixels, arbitrary finite
    non-unit vectors elsewhere; ``valid``: about ``valid_fraction`` True; ``intrinsics``:
    a plausible pinhole matrix (with a little skew now and then).
    """
    g = generator
    h, w = height, width
    out: Sample = {}
    valid = torch.rand(h, w, generator=g) < valid_fraction
    if "image" in kinds:
        if image_dtype.is_floating_point:
            out["image"] = Image(torch.rand(3, h, w, generator=g, dtype=image_dtype))
        else:
            out["image"] = Image(torch.randint(0, 256, (3, h, w), generator=g, dtype=image_dtype))
    if "mask" in kinds:
        classes = torch.randint(0, 30, (4,), generator=g)
        mask = classes[torch.randint(0, 4, (h, w), generator=g)]
        mask[torch.rand(h, w, generator=g) < 0.1] = 255
        out["mask"] = ClassMask(mask.to(mask_dtype))
    if "depth" in kinds:
        depth = torch.rand(1, h, w, generator=g, dtype=float_dtype) * 10 + 0.1
        junk = torch.randn(1, h, w, generator=g, dtype=float_dtype) * 3
        out["depth"] = ScalarField(torch.where(valid, depth, junk))
    if "normals" in kinds:
        n = torch.randn(3, h, w, generator=g, dtype=float_dtype)
        n[2] = -n[2].abs() - 0.05
        n = n / n.norm(dim=0, keepdim=True)
        junk = torch.randn(3, h, w, generator=g, dtype=float_dtype) * 2
        out["normals"] = UnitVectorField(torch.where(valid, n, junk))
    if "valid" in kinds:
        out["valid"] = ValidityMask(valid)
    if "intrinsics" in kinds:
        side = float(max(h, w))
        values = torch.rand(5, generator=g, dtype=torch.float64)
        fx, fy = side * (0.5 + 1.5 * float(values[0])), side * (0.5 + 1.5 * float(values[1]))
        skew = 0.0 if float(values[4]) < 0.7 else 0.05 * fx
        k = torch.tensor(
            [[fx, skew, (w - 1) * float(values[2])], [0.0, fy, (h - 1) * float(values[3])], [0.0, 0.0, 1.0]],
            dtype=float_dtype,
        )
        out["intrinsics"] = Intrinsics(k)
    return out


def sample_strategy(
    *, min_side: int = 1, max_side: int = 16,
    kinds: Sequence[str] = ("image", "mask", "depth", "normals", "valid", "intrinsics"),
) -> Any:
    """Hypothesis strategy of ``(sample, seed)`` pairs: random sizes, dtypes and contents."""
    st = _hypothesis().strategies

    @st.composite
    def build(draw: Any) -> tuple[Sample, int]:
        h = draw(st.integers(min_side, max_side))
        w = draw(st.integers(min_side, max_side))
        sample = random_sample(
            h, w, torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1))),
            image_dtype=draw(st.sampled_from([torch.uint8, torch.uint8, torch.float32])),
            mask_dtype=draw(st.sampled_from([torch.int64, torch.int32, torch.uint8])),
            float_dtype=draw(st.sampled_from([torch.float32, torch.float32, torch.float64])),
            valid_fraction=draw(st.sampled_from([1.0, 0.8, 0.3])),
            kinds=kinds,
        )
        return sample, draw(st.integers(0, 2**31 - 1))

    return build()


def builtin_transforms(names: Sequence[str] | None = None, *, geometric_only: bool = False) -> Any:
    """Hypothesis strategy of pixcore's built-in transforms with random valid parameters.

    ``names`` restricts it to some registry names (``"hflip"``, ``"rotate"``, ...).
    Size-producing transforms draw output sizes between 1 and 20.
    """
    from pixcore import augment as a

    st = _hypothesis().strategies
    sizes = st.tuples(st.integers(1, 20), st.integers(1, 20))
    unit = st.floats(0.0, 1.0)
    fills = st.integers(0, 255).map(float)
    mask_fills = st.sampled_from([255, 0, 7])
    zoom = st.booleans()
    interpolation = st.sampled_from(["bilinear", "nearest"])
    def ordered(low: float, high: float) -> Any:
        return st.tuples(st.floats(low, high), st.floats(low, high)).map(lambda t: (min(t), max(t)))

    scale_pair = ordered(0.05, 1.0)
    geometric = {
        "hflip": st.builds(a.HorizontalFlip, p=unit),
        "vflip": st.builds(a.VerticalFlip, p=unit),
        "rotate90": st.builds(a.RandomRotate90, p=unit),
        "rotate": st.builds(
            a.Rotate, degrees=st.floats(0.0, 180.0), fill=fills, mask_fill=mask_fills,
            interpolation=interpolation, p=unit,
        ),
        "random_resized_crop": st.builds(
            a.RandomResizedCrop, size=sizes, scale=scale_pair, interpolation=interpolation,
            divide_depth_by_zoom=zoom, p=unit,
        ),
        "random_scale": st.builds(
            a.RandomScale, scale=ordered(0.2, 3.0),
            interpolation=interpolation, divide_depth_by_zoom=zoom, p=unit,
        ),
        "random_crop": st.builds(a.RandomCrop, size=sizes, fill=fills, mask_fill=mask_fills),
        "center_crop": st.builds(a.CenterCrop, size=sizes, fill=fills, mask_fill=mask_fills),
        "pad_if_needed": st.builds(
            a.PadIfNeeded, min_height=st.integers(1, 24), min_width=st.integers(1, 24),
            position=st.sampled_from(["center", "top_left"]), fill=fills, mask_fill=mask_fills,
        ),
        "resize": st.builds(a.Resize, size=sizes, interpolation=interpolation, divide_depth_by_zoom=zoom),
    }
    photometric = {
        "color_jitter": st.builds(
            a.ColorJitter, brightness=st.floats(0.0, 0.9), contrast=st.floats(0.0, 0.9),
            saturation=st.floats(0.0, 0.9), hue=st.floats(0.0, 0.5), p=unit,
        ),
        "random_gamma": st.builds(a.RandomGamma, p=unit),
        "gaussian_blur": st.builds(a.GaussianBlur, sigma=st.floats(0.1, 3.0), p=unit),
        "gaussian_noise": st.builds(a.GaussianNoise, std=st.floats(0.0, 0.2), p=unit),
    }
    table = dict(geometric) if geometric_only else {**geometric, **photometric}
    chosen = list(names) if names is not None else sorted(table)
    unknown = [n for n in chosen if n not in table]
    if unknown:
        raise ValueError(f"no built-in transform strategy for {unknown}; known: {', '.join(sorted(table))}")
    return st.one_of(*(table[n] for n in chosen))


# --------------------------------------------------------------------------------------
# One example
# --------------------------------------------------------------------------------------


def _plain(x: Tensor) -> Tensor:
    return x.as_subclass(Tensor)


def _clone(sample: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in sample.items()}


def _size(sample: Mapping[str, Any]) -> tuple[int, int]:
    for value in sample.values():
        if isinstance(value, TargetKind) and value.spatial:
            return int(value.shape[-2]), int(value.shape[-1])
    raise ValueError("the sample has no pixel-aligned value")


def _name(transform: Any) -> str:
    return type(transform).__name__


def _call(transform: Augmentation, sample: Sample, seed: int) -> Sample:
    return transform(sample, torch.Generator().manual_seed(seed))


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(_plain(a), _plain(b)))


def _fit_affine(src_xy: Tensor, dst_xy: Tensor) -> tuple[Tensor, float] | None:
    """Least-squares ``dst ~ L src + t``; ``(L, spread)`` or None when degenerate."""
    if src_xy.shape[0] < 3:
        return None
    centred = src_xy - src_xy.mean(0)
    spread = float(centred.abs().max(0).values.min())
    if spread < 1.0 or torch.linalg.matrix_rank(centred) < 2:
        return None
    design = torch.cat([src_xy, torch.ones(src_xy.shape[0], 1, dtype=src_xy.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, dst_xy).solution  # [3, 2]
    return solution[:2].T.contiguous(), spread


def _polar(m: Tensor) -> Tensor:
    u, _, vh = torch.linalg.svd(m)
    return u @ vh


@dataclass
class _Call:
    """One call of the transform under test: its input (with the tracker) and its output."""

    transform: Augmentation
    name: str
    sample: Sample  # as given, without the tracker
    seed: int
    tracked: Sample  # the sample plus the tracker mask
    out: Sample
    size: tuple[int, int]  # input (height, width)
    out_size: tuple[int, int]  # output (height, width)


@dataclass
class _Provenance:
    """Where each output pixel came from, read off the tracker (flat output indices)."""

    from_input: Tensor  # [oh * ow] bool: the pixel comes from an input pixel
    filled: Tensor  # [oh * ow] bool: the pixel was filled
    source: Tensor  # [oh * ow] flat input index (0 where filled)
    identity: bool  # same size, nothing filled, every pixel where it was
    src_xy: Tensor  # [n, 2] (x, y) of the source of each non-filled output pixel
    dst_xy: Tensor  # [n, 2] (x, y) of each non-filled output pixel
    fit: tuple[Tensor, float] | None  # the least-squares pixel map, see _fit_affine
    check_pixels: Tensor  # [oh * ow] bool: from an input pixel and valid in every mask


def _run_tracked(transform: Augmentation, sample: Sample, seed: int) -> tuple[_Call, Sample]:
    """Call ``transform`` on ``sample`` plus a tracker mask; the call and a copy of its input."""
    h, w = _size(sample)
    require(h * w < _OFFSET, f"the tracker supports samples up to {_OFFSET} pixels")
    tracked: Sample = dict(sample)
    tracked[_TRACK] = ClassMask(torch.arange(h * w, dtype=torch.int64).view(h, w) + _OFFSET)
    before = _clone(tracked)
    out = _call(transform, tracked, seed)
    call = _Call(transform, _name(transform), sample, seed, tracked, out, (h, w), (h, w))
    return call, before


def _check_input_untouched(call: _Call, before: Mapping[str, Any]) -> None:
    """Property 1: the input sample is not modified."""
    for key, value in before.items():
        require(_same(call.tracked[key], value), f"{call.name} modified its input (key {key!r})")


def _check_output_layout(call: _Call) -> None:
    """Property 2: keys, kinds and dtypes kept, one output size, finite floats.

    Sets ``call.out_size``.
    """
    name, out, tracked = call.name, call.out, call.tracked
    require(set(out) == set(tracked), f"{name} changed the keys: {sorted(set(out) ^ set(tracked))}")
    oh, ow = call.out_size = _size(out)
    for key, value in out.items():
        original = tracked[key]
        if not isinstance(original, Tensor):
            continue
        require(
            type(value) is type(original),
            f"{name} changed the kind of {key!r}: {type(original).__name__} -> {type(value).__name__}",
        )
        dtype_ok = value.dtype == original.dtype or (
            isinstance(original, Image) and value.dtype.is_floating_point
        )
        require(dtype_ok, f"{name} changed the dtype of {key!r}: {original.dtype} -> {value.dtype}")
        if isinstance(original, TargetKind) and original.spatial:
            require(
                tuple(value.shape[-2:]) == (oh, ow) and value.shape[:-2] == original.shape[:-2],
                f"{name}: {key!r} has shape {tuple(value.shape)}, expected {(*original.shape[:-2], oh, ow)}",
            )
        else:
            require(value.shape == original.shape, f"{name} changed the shape of {key!r}")
        if value.dtype.is_floating_point:
            require(bool(torch.isfinite(value).all()), f"{name} produced non-finite values in {key!r}")


def _check_deterministic(call: _Call) -> None:
    """Property 3: the same seed gives bit-identical outputs."""
    again = _call(call.transform, dict(call.sample, **{_TRACK: call.tracked[_TRACK]}), call.seed)
    for key, value in call.out.items():
        if isinstance(value, Tensor):
            require(_same(value, again[key]), f"{call.name}: the same seed gave different {key!r}")


def _provenance(call: _Call) -> _Provenance:
    """Read the tracker: where each output pixel came from, and which pixels to compare."""
    name, out = call.name, call.out
    h, w = call.size
    oh, ow = call.out_size
    codes = _plain(out[_TRACK]).reshape(-1)
    from_input = codes >= _OFFSET
    filled = ~from_input
    source = torch.where(from_input, codes - _OFFSET, torch.zeros_like(codes))
    require(bool((source < h * w).all()), f"{name} produced class ids that are not in its input")
    fills = codes[filled].unique()
    require(fills.numel() <= 1, f"{name} filled class masks with several values: {fills.tolist()}")
    identity = (oh, ow) == (h, w) and bool(filled.logical_not().all()) and bool(
        torch.equal(source, torch.arange(h * w))
    )
    src_xy = torch.stack([(source % w).double(), (source // w).double()], dim=1)[from_input]
    dst = torch.arange(oh * ow)
    dst_xy = torch.stack([(dst % ow).double(), (dst // ow).double()], dim=1)[from_input]
    fit = None if identity else _fit_affine(src_xy, dst_xy)

    valid_out = torch.ones(oh * ow, dtype=torch.bool)
    for value in out.values():
        if isinstance(value, ValidityMask) and value.shape[:-2] == ():
            valid_out &= _plain(value).reshape(-1)
    return _Provenance(
        from_input, filled, source, identity, src_xy, dst_xy, fit, from_input & valid_out
    )


def _check_class_masks(call: _Call, at: _Provenance) -> None:
    """Property 4: class masks hold their source pixels' classes, and one fill value."""
    name = call.name
    for key, value in call.out.items():
        if key == _TRACK or not isinstance(value, ClassMask) or value.shape[:-2] != ():
            continue
        before_values = _plain(call.tracked[key]).reshape(-1)
        after = _plain(value).reshape(-1)
        require(
            bool(torch.equal(after[at.from_input], before_values[at.source[at.from_input]])),
            f"{name}: class mask {key!r} does not hold its source pixels' classes "
            "(class masks must be resampled by nearest neighbour)",
        )
        mask_fills = after[at.filled].unique()
        require(mask_fills.numel() <= 1, f"{name} filled {key!r} with several values: {mask_fills.tolist()}")
        allowed = set(before_values.unique().tolist()) | set(mask_fills.tolist())
        require(
            set(after.unique().tolist()) <= allowed,
            f"{name}: class mask {key!r} gained values {sorted(set(after.unique().tolist()) - allowed)}",
        )


def _check_validity(call: _Call, at: _Provenance, exact_transport: bool) -> None:
    """Property 5: filled pixels are invalid; validity is carried from the source pixels."""
    name = call.name
    for key, value in call.out.items():
        if not isinstance(value, ValidityMask) or value.shape[:-2] != ():
            continue
        after = _plain(value).reshape(-1)
        before_values = _plain(call.tracked[key]).reshape(-1)
        require(not bool(after[at.filled].any()), f"{name}: filled pixels are valid in {key!r}")
        carried = before_values[at.source[at.from_input]]
        if exact_transport:
            ok = bool(torch.equal(after[at.from_input], carried))
        else:
            ok = not bool((after[at.from_input] & ~carried).any())
        require(
            ok,
            f"{name}: validity {key!r} is not transported: a valid output pixel comes from an "
            "invalid input pixel",
        )


def _depth_ratios(call: _Call, at: _Provenance, exact_transport: bool) -> list[float]:
    """Property 6, first half: each depth is its source depth times one ratio; the ratios."""
    ratios: list[float] = []
    for key, value in call.out.items():
        if not isinstance(value, ScalarField) or value.shape[:-3] != ():
            continue
        after = _plain(value).double().reshape(-1)[at.check_pixels]
        before_values = _plain(call.tracked[key]).double().reshape(-1)[at.source[at.check_pixels]]
        nonzero = before_values.abs() > 1e-6
        if not bool(nonzero.any()):
            continue
        ratio = after[nonzero] / before_values[nonzero]
        r = float(ratio.median())
        tolerance = 1e-5 if exact_transport else 1e-2
        require(
            bool(((ratio - r).abs() <= tolerance * abs(r) + 1e-9).all()),
            f"{call.name}: depth {key!r} is not carried by nearest neighbour with one scale factor "
            f"(ratios from {float(ratio.min()):.6g} to {float(ratio.max()):.6g})",
        )
        ratios.append(r)
    return ratios


def _zoom(call: _Call, at: _Provenance) -> float | None:
    """The call's zoom: from the intrinsics when there are some, else from the pixel map."""
    zoom: float | None = None
    for key, value in call.out.items():
        if isinstance(value, Intrinsics) and value.shape == (3, 3):
            k0 = _plain(call.tracked[key]).double()
            k1 = _plain(value).double()
            zoom = math.sqrt(abs(float(torch.linalg.det(k1[:2, :2]) / torch.linalg.det(k0[:2, :2]))))
    if zoom is None and at.fit is not None:
        zoom = math.sqrt(abs(float(torch.linalg.det(at.fit[0]))))
    return zoom


def _check_depth(
    call: _Call, at: _Provenance, depth_scaling: DepthScaling, exact_transport: bool
) -> None:
    """Property 6: depth moves by nearest neighbour, kept or divided by the zoom."""
    name, fit = call.name, at.fit
    ratios = _depth_ratios(call, at, exact_transport)
    zoom = _zoom(call, at)
    has_intrinsics = any(isinstance(v, Intrinsics) and v.shape == (3, 3) for v in call.out.values())
    for r in ratios:
        if depth_scaling == "keep":
            require(
                abs(r - 1.0) <= 1e-5,
                f"{name} scaled depth by {r:.6g}; with depth_scaling='keep' it must not",
            )
            continue
        if zoom is None:
            continue
        tolerance = 1e-4 if has_intrinsics else 2.0 / max(1.0, fit[1] if fit is not None else 1.0)
        require(
            abs(r * zoom - 1.0) <= tolerance,
            f"{name}: with depth_scaling='divide' depth must be divided by the zoom {zoom:.6g}, "
            f"but it was multiplied by {r:.6g}",
        )


def _check_normals(
    call: _Call, at: _Provenance, exact_transport: bool
) -> tuple[Tensor | None, str]:
    """Property 7: unit normals, z kept, (x, y) rotated like the image.

    Returns the rotation the normals revealed and the key it came from (None, "" if none).
    """
    name, fit = call.name, at.fit
    rotation: Tensor | None = None
    rotation_from = ""
    for key, value in call.out.items():
        if not isinstance(value, UnitVectorField) or value.shape[:-3] != ():
            continue
        after = _plain(value).double().reshape(3, -1)[:, at.check_pixels]
        sources = at.source[at.check_pixels]
        before_values = _plain(call.tracked[key]).double().reshape(3, -1)[:, sources]
        if after.shape[1] == 0:
            continue
        norms = after.norm(dim=0)
        require(
            bool(((norms - 1.0).abs() <= 1e-4).all()),
            f"{name}: normals {key!r} are not unit length on valid pixels (|norm - 1| up to "
            f"{float((norms - 1.0).abs().max()):.3g}); unit vectors must not be blended "
            "without renormalisation",
        )
        if not exact_transport:
            continue
        require(
            bool(((after[2] - before_values[2]).abs() <= 1e-5).all()),
            f"{name}: normals {key!r} changed their z component (an image-plane transform keeps z)",
        )
        a_xy, b_xy = after[:2], before_values[:2]
        if after.shape[1] >= 2 and float(torch.linalg.matrix_rank(b_xy, atol=1e-3)) >= 2:
            q = _polar(a_xy @ b_xy.T)
            residual = float((q @ b_xy - a_xy).abs().max())
            require(
                residual <= 1e-4,
                f"{name}: normals {key!r} are not the source pixels' normals rotated or mirrored "
                f"by one matrix (residual {residual:.3g}); vectors must move with the camera",
            )
            rotation, rotation_from = q, key
            if fit is not None:
                _check_normals_rotation(name, key, q, fit)
    return rotation, rotation_from


def _check_normals_rotation(name: str, key: str, q: Tensor, fit: tuple[Tensor, float]) -> None:
    """Property 7, last part: the normals' rotation ``q`` is the pixel map's (and mirrors with it)."""
    expected = _polar(fit[0])
    require(
        float(torch.linalg.det(q)) * float(torch.linalg.det(expected)) > 0,
        f"{name}: normals {key!r} were "
        f"{'mirrored' if torch.linalg.det(q) < 0 else 'not mirrored'} "
        "but the image was not (or the other way round)",
    )
    # Nearest neighbour hides rotations smaller than about 1 / spread radians.
    tolerance = 1e-6 if _exact_fit(q) and _exact_fit(fit[0]) else 1.5 / fit[1] + 1e-3
    require(
        float((q - expected).abs().max()) <= tolerance + 1e-6,
        f"{name}: normals {key!r} rotated by {_angle(q):.4g} rad but the image by "
        f"{_angle(expected):.4g} rad (rotate (x, y) by the image's angle, y down)",
    )


def _check_intrinsics(
    call: _Call, at: _Provenance, rotation: Tensor | None, rotation_from: str, resampling_steps: int
) -> None:
    """Property 8: intrinsics keep ``[0, 0, 1]`` and reproject source pixels onto their outputs."""
    name, fit, src_xy, dst_xy = call.name, at.fit, at.src_xy, at.dst_xy
    for key, value in call.out.items():
        if not isinstance(value, Intrinsics) or value.shape != (3, 3):
            continue
        k1 = _plain(value).double()
        k0 = _plain(call.tracked[key]).double()
        require(
            bool(torch.allclose(k1[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6)),
            f"{name}: intrinsics {key!r} lost their last row [0, 0, 1]: {k1[2].tolist()}",
        )
        how = "the pixel map"
        if rotation is not None:
            q2 = rotation
            how = f"the normals {rotation_from!r} (wrong normals fail here too)"
        elif fit is not None:
            q2 = _polar(fit[0])
        elif at.identity:
            q2 = torch.eye(2, dtype=torch.float64)
        else:
            continue  # too few pixels to know the camera's rotation
        q3 = torch.eye(3, dtype=torch.float64)
        q3[:2, :2] = q2
        if rotation is None and _rounding_hides_the_warp(call, at, k1 @ q3 @ torch.linalg.inv(k0)):
            continue
        pts = torch.cat([src_xy, torch.ones(src_xy.shape[0], 1, dtype=torch.float64)], dim=1).T
        projected = k1 @ q3 @ torch.linalg.solve(k0, pts)
        projected = projected[:2] / projected[2]
        error = (projected - dst_xy.T).abs()
        # The pixel map's linear part implied by the intrinsics: K' = P K Q^T.
        p2 = k1[:2, :2] @ q2 @ torch.linalg.inv(k0[:2, :2])
        exact = _exact_fit(p2) and (fit is None or _exact_fit(fit[0]))
        if exact:
            bound = 1e-3 * max(1.0, float(dst_xy.abs().max()) if dst_xy.numel() else 1.0)
        else:  # a source pixel centre is within half a pixel of the exact source position
            steps = max(1, resampling_steps)
            scale = max(1.0, float(p2.abs().sum(1).max()))
            bound = 0.5 * steps * scale * (1.0 + 1e-6) + 0.5 * (steps - 1) + 1e-3
        if error.numel():
            require(
                float(error.max()) <= bound,
                f"{name}: intrinsics {key!r} do not follow the pixels: input pixels reproject up "
                f"to {float(error.max()):.3g} px from where the transform put them (allowed {bound:.3g}; "
                f"camera rotation taken from {how})",
            )


def _check_unknown_kind(call: _Call) -> None:
    """Property 9: an unknown kind is refused by name, or left alone by a call that moves nothing."""
    name, out, tracked = call.name, call.out, call.tracked
    h, w = call.size
    # Did the call change anything but images? (A flip of a one-pixel-wide image moves no
    # pixel yet mirrors the camera: the tracker alone cannot tell.)
    unchanged = all(
        _same(value, tracked[key])
        for key, value in out.items()
        if isinstance(value, Tensor) and not isinstance(value, Image)
    )
    alien = AlienKind(torch.rand(1, h, w, generator=torch.Generator().manual_seed(call.seed)))
    with_alien: dict[str, Tensor] = {**call.sample, _TRACK: tracked[_TRACK], _ALIEN: alien}
    try:
        result = _call(call.transform, with_alien, call.seed)
    except Exception as error:  # noqa: BLE001 - any refusal is fine if it names the kind
        require(
            AlienKind.kind in str(error),
            f"{name} refused a sample with an unknown target kind, but its error does not name "
            f"the kind ({AlienKind.kind!r}): {error}",
        )
    else:
        require(
            unchanged,
            f"{name} moved the targets but passed an unknown target kind ({AlienKind.kind!r}) "
            "through untouched: a geometric transform must refuse kinds it has no rule for",
        )
        require(
            _same(result[_ALIEN], alien),
            f"{name} changed an unknown target kind ({AlienKind.kind!r}) it has no rule for",
        )


def _check_photometric_touches_images_only(call: _Call) -> None:
    """Property 10: a photometric transform (one with no geometric ops) changes images only."""
    transform = call.transform
    photometric: bool = getattr(transform, "photometric", False)
    ops: tuple[str, ...] = getattr(transform, "ops", ())
    if not photometric or ops:
        return
    for key, value in call.out.items():
        if isinstance(value, Image) or not isinstance(value, Tensor):
            continue
        require(
            _same(value, call.tracked[key]),
            f"{call.name} is photometric but changed {key!r} ({type(value).__name__}); "
            "only images may change",
        )


def check_augmentation_once(
    transform: Augmentation,
    sample: Sample,
    seed: int,
    *,
    depth_scaling: DepthScaling | None = None,
    exact_transport: bool = True,
    photometric: bool | None = None,
    resampling_steps: int | None = None,
) -> None:
    """Check every property on one ``(sample, seed)``; raise :class:`ContractError` if one fails.

    Properties (the tracker tells where each output pixel came from):

    1. the input sample is not modified;
    2. keys and target kinds are kept, dtypes too (an image may become float), all
       pixel-aligned outputs share one size, float outputs are finite;
    3. the same seed gives bit-identical outputs;
    4. class masks: each output pixel holds its source pixel's class (nearest
       neighbour), filled pixels one fill value; the value set never grows beyond the
       input's plus that fill;
    5. validity masks: filled pixels are invalid; a valid output pixel comes from a valid
       input pixel (with ``exact_transport``, validity is carried exactly);
    6. depth: finite; on valid pixels ``out = r * in[source]`` with one ratio ``r``:
       1 for ``depth_scaling="keep"``, ``1 / zoom`` for ``"divide"`` (zoom from the
       intrinsics, or from the pixel map);
    7. normals: finite; unit length on valid pixels; on valid pixels ``z`` is kept and
       ``(x, y)`` map by one orthogonal matrix, the rotation (or mirror) of the pixel
       map (with ``exact_transport``: the source vector rotated, no blending);
    8. intrinsics: last row ``[0, 0, 1]``; ``K' Q K^-1`` reprojects each source pixel onto
       its output pixel (within the nearest-neighbour rounding);
    9. an unknown target kind is refused with an error naming it, or left untouched by a
       call that moves no pixel; passing it through a call that moves pixels fails;
    10. a call that moves no pixel leaves every non-image value bit-identical;
    11. unless ``photometric``: the geometry does not depend on the image content, and
        the image moves with the targets (checked on a ramp image).

    ``resampling_steps`` (how many nearest-neighbour resamplings a call may chain; each
    adds up to half a source pixel of rounding to the reprojection bound) defaults to the
    number of warping transforms in a :class:`~pixcore.augment.Compose`, else 1.
    ``depth_scaling`` defaults to the transform's ``divide_depth_by_zoom`` attribute
    (``"divide"`` if true, else ``"keep"``). ``photometric`` defaults to the transform's
    ``photometric`` attribute (True when it has none).
    """
    if resampling_steps is None:
        resampling_steps = _resampling_steps(transform)
    if depth_scaling is None:
        depth_scaling = "divide" if getattr(transform, "divide_depth_by_zoom", False) else "keep"
    if photometric is None:
        photometric = bool(getattr(transform, "photometric", True))

    call, before = _run_tracked(transform, sample, seed)
    _check_input_untouched(call, before)  # 1
    _check_output_layout(call)  # 2
    _check_deterministic(call)  # 3
    at = _provenance(call)
    _check_class_masks(call, at)  # 4
    _check_validity(call, at, exact_transport)  # 5
    _check_depth(call, at, depth_scaling, exact_transport)  # 6
    rotation, rotation_from = _check_normals(call, at, exact_transport)  # 7
    _check_intrinsics(call, at, rotation, rotation_from, resampling_steps)  # 8
    _check_unknown_kind(call)  # 9
    _check_photometric_touches_images_only(call)  # 10
    if not photometric and "image" in sample and isinstance(sample["image"], Image):  # 11
        _check_image_follows(
            transform, sample, call.tracked[_TRACK], call.out[_TRACK], seed, call.size,
            at.source, at.from_input, at.fit, max(1, resampling_steps),
        )


def _resampling_steps(transform: Any) -> int:
    children = getattr(transform, "transforms", None)
    if isinstance(children, (list, tuple)):
        counts = [_resampling_steps(t) for t in children]
        if type(transform).__name__ == "OneOf":
            return max(counts, default=0)
        return sum(counts)
    ops = getattr(transform, "ops", None)
    if ops is None:
        return 1
    return 1 if "warp" in ops else 0


def _rounding_hides_the_warp(call: _Call, at: _Provenance, implied: Tensor) -> bool:
    """Whether the pixels cannot show the camera's rotation of a slight warp.

    Rotating a tiny image by a degree moves no pixel centre by half a pixel: nearest
    neighbour leaves every pixel where it was (or where a flip or quarter turn would put
    it), so the pixel map says "no rotation" while the intrinsics, correctly, move. Then
    the map ``implied`` by the intrinsics is not a signed permutation with a whole-pixel
    shift, as every exact operation's is, and nothing can be checked against the pixels.
    """
    if "warp" not in getattr(call.transform, "ops", ()):
        return False
    looks_exact = at.identity or (at.fit is not None and _exact_fit(at.fit[0]))
    shift = implied[:2, 2]
    exact = _exact_fit(implied[:2, :2]) and bool(((shift - shift.round()).abs() < 1e-6).all())
    return looks_exact and not exact


def _exact_fit(m: Tensor) -> bool:
    """True for a pixel map that is a signed permutation (flip, quarter turn, crop)."""
    return bool(((m.abs() - m.abs().round()).abs() < 1e-9).all()) and bool(
        (m.abs().round().sum(0) == 1).all()
    )


def _angle(q: Tensor) -> float:
    return math.atan2(float(q[1, 0]), float(q[0, 0]))


def _check_image_follows(
    transform: Augmentation, sample: Sample, tracker: Tensor, tracked_out: Tensor, seed: int,
    size: tuple[int, int], source: Tensor, from_input: Tensor, fit: tuple[Tensor, float] | None,
    steps: int,
) -> None:
    """Property 11: the geometry ignores the image content, and a ramp image moves with it."""
    name = _name(transform)
    h, w = size
    image = sample["image"]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    top = 1.0 if image.dtype.is_floating_point else 255.0
    ramp = torch.stack([xs * (top / max(1, w - 1)), ys * (top / max(1, h - 1)), torch.full_like(xs, top / 2)])
    ramp_image = Image((ramp if image.dtype.is_floating_point else ramp.round()).to(image.dtype))
    out = _call(transform, dict(sample, image=ramp_image, **{_TRACK: tracker}), seed)
    require(
        _same(out[_TRACK], tracked_out),
        f"{name}: the geometry depends on the image content (same seed, different image, different geometry)",
    )
    got = _plain(out["image"]).double().reshape(3, -1)
    if image.dtype.is_floating_point and not out["image"].dtype.is_floating_point:
        return
    if not image.dtype.is_floating_point and out["image"].dtype.is_floating_point:
        return  # normalised: values are no longer comparable
    sx, sy = source % w, source // w
    inner = from_input & (sx > 0) & (sx < w - 1) & (sy > 0) & (sy < h - 1)
    if not bool(inner.any()):
        return
    expected = ramp.reshape(3, -1)[:, source[inner]]
    slope = torch.tensor([top / max(1, w - 1), top / max(1, h - 1)], dtype=torch.float64)
    # Nearest-neighbour rounding (half a source pixel; it can hide small rotations) and,
    # when shrinking, the antialiasing filter's reach (one output pixel in source pixels).
    shrink = 0.0
    if fit is not None:
        shrink = max(0.0, 1.0 / max(1e-6, float(torch.linalg.svdvals(fit[0]).min())) - 1.0)
    step = (0.5 + shrink) * steps * float(slope.sum())
    bound = step + (1.0 if not image.dtype.is_floating_point else 1e-5) + 1e-6
    error = (got[:2, inner] - expected[:2]).abs()
    require(
        float(error.max()) <= bound,
        f"{name}: the image does not move with the targets (a ramp image is off by up to "
        f"{float(error.max()):.3g}, allowed {bound:.3g})",
    )


# --------------------------------------------------------------------------------------
# The one-call suites
# --------------------------------------------------------------------------------------


def _run(
    test: Callable[..., None], max_examples: int | None, overrides: Mapping[str, Any] | None,
    **strategies: Any,
) -> None:
    hypothesis = _hypothesis()
    settings = hypothesis.settings
    examples = max_examples if max_examples is not None else settings.default.max_examples
    options = {"max_examples": examples, "deadline": None, "database": None, **(overrides or {})}
    test = hypothesis.given(**strategies)(test)
    test = settings(settings.default, **options)(test)
    test()


def check_augmentation(
    transform: Augmentation | Callable[[], Augmentation] | Any,
    *,
    max_examples: int | None = None,
    depth_scaling: DepthScaling | None = None,
    exact_transport: bool = True,
    photometric: bool | None = None,
    resampling_steps: int | None = None,
    min_side: int = 1,
    max_side: int = 16,
    kinds: Sequence[str] = ("image", "mask", "depth", "normals", "valid", "intrinsics"),
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Run every property of :func:`check_augmentation_once` over random samples and seeds.

    Args:
        transform: An augmentation, a zero-argument factory of one, or a hypothesis
            strategy of augmentations (to vary parameters too).
        max_examples: Examples to try; default from the loaded hypothesis profile.
        depth_scaling: See :func:`check_augmentation_once`.
        exact_transport: See :func:`check_augmentation_once`.
        photometric: See :func:`check_augmentation_once`.
        resampling_steps: See :func:`check_augmentation_once`.
        min_side: Smallest random height and width.
        max_side: Largest random height and width.
        kinds: Which targets the random samples carry.
        settings: Extra ``hypothesis.settings`` (e.g. ``{"phases": ...}``).

    Raises:
        ContractError: A property fails; hypothesis prints the smallest failing example.

    """
    hypothesis = _hypothesis()
    st = hypothesis.strategies
    if isinstance(transform, st.SearchStrategy):
        transforms = transform
    elif isinstance(transform, Augmentation) or not callable(transform):
        transforms = st.just(transform)
    else:
        transforms = st.builds(transform)

    def run(case: tuple[Sample, int], augmentation: Augmentation) -> None:
        sample, seed = case
        check_augmentation_once(
            augmentation, sample, seed, depth_scaling=depth_scaling,
            exact_transport=exact_transport, photometric=photometric,
            resampling_steps=resampling_steps,
        )

    cases = sample_strategy(min_side=min_side, max_side=max_side, kinds=kinds)
    _run(run, max_examples, settings, case=cases, augmentation=transforms)


def _nearest_relation(before: Tensor, after: Tensor, source: Tensor) -> None:
    """Default relation: every output pixel holds its source pixel's values."""
    flat_before = before.reshape(*before.shape[:-2], -1)
    flat_after = after.reshape(*after.shape[:-2], -1)
    taken = source >= 0
    require(
        bool(torch.equal(flat_after[..., taken], flat_before[..., source[taken]])),
        "the new kind does not carry its source pixels' values (nearest neighbour)",
    )


# --------------------------------------------------------------------------------------
# Fill values and batched use of a kind's rules
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KindFill:
    """What the filled (padded) pixels of a kind must hold.

    ``of(geometry)`` gives the value; ``constant`` is it when no geometry parameter
    matters (None for class masks and images); ``why`` ends the error message.
    """

    of: Callable[[Geometry], float]
    constant: float | None
    why: str


def _kind_fill(kind: type[TargetKind], fill: float | None) -> _KindFill:
    """The fill rule of ``kind``: fixed for the built-in families, ``fill`` (or 0) otherwise."""
    mask_fill = "the geometry's mask_fill (the ignore index)"
    families: tuple[tuple[type[TargetKind], str, _KindFill], ...] = (
        (ClassMask, mask_fill, _KindFill(
            lambda g: float(g.mask_fill), None,
            f"{mask_fill}, never a real class id, which would be learnt as the padding's "
            "class: fill with g.mask_fill (g.crop(x, g.mask_fill), g.nearest(x, g.mask_fill))",
        )),
        (ValidityMask, "False", _KindFill(lambda g: 0.0, 0.0, "False: filled pixels are invalid")),
        (Image, "g.fill",
         _KindFill(lambda g: float(g.fill), None, "the geometry's image fill g.fill")),
    )
    for base, short, rule in families:
        if issubclass(kind, base):
            if fill is not None:
                raise ValueError(
                    f"check_target_kind: {kind.__name__} is a {base.__name__}, whose padded pixels "
                    f"must hold {short}; drop fill={fill!r}"
                )
            return rule
    value = 0.0 if fill is None else float(fill)
    return _KindFill(
        lambda g: value, value,
        f"{value:g}, the kind's fill (pass check_target_kind(..., fill=...) if it declares "
        "another), while the sample's ValidityMask marks them invalid: fill with it, e.g. "
        f"g.crop(x, {value:g}), g.nearest(x, {value:g})",
    )


def _filling_geometries(size: tuple[int, int]) -> list[Geometry]:
    """Geometries that pad: a crop past two edges, a shifting resize, a rotation."""
    h, w = size
    geometries: list[Geometry] = []
    for fill, mask_fill in ((0.0, 255), (17.0, 7)):
        geometries += [
            Crop(size, top=-2, left=1, height=h, width=w + 3, fill=fill, mask_fill=mask_fill),
            Warp(size, size=(h + 2, w + 3), matrix=(1.0, 0.0, -1.0, 0.0, 1.0, -1.0),
                 fill=fill, mask_fill=mask_fill),
            Warp.rotation(size, 30.0, fill=fill, mask_fill=mask_fill),
        ]
    return geometries


def _filled_pixels(geometry: Geometry) -> Tensor:
    """Boolean ``[H', W']``: the output pixels that ``geometry`` fills."""
    if isinstance(geometry, Crop):
        return ~geometry.crop(torch.ones(geometry.in_size, dtype=torch.bool), False)
    outside = geometry.outside() if isinstance(geometry, Warp) else None
    return outside if outside is not None else torch.zeros(geometry.out_size, dtype=torch.bool)


def _fits(value: float, dtype: torch.dtype) -> bool:
    if dtype.is_floating_point or dtype == torch.bool:
        return True
    info = torch.iinfo(dtype)
    return info.min <= value <= info.max


def _require_fill(
    kind: type[TargetKind], where: str, after: Tensor, filled: Tensor, expected: float, why: str
) -> None:
    got = after[..., filled]
    if got.numel() == 0:
        return
    want = torch.full_like(got, expected)
    if bool(torch.equal(got, want)):
        return
    held = sorted(set(got.unique().tolist()))
    shown = ", ".join(f"{v:g}" for v in held[:6]) + (" ..." if len(held) > 6 else "")
    raise ContractError(
        f"{where}: padded pixels of {kind.__name__} hold {shown}, but they must hold {why}"
    )


def _check_fills(kind: type[TargetKind], make: KindMaker, fill: _KindFill) -> None:
    """Every padding rule of ``kind`` fills with the kind's fill value (direct probes)."""
    size = (5, 7)
    value = _plain(make(*size, torch.Generator().manual_seed(0)))
    for geometry in _filling_geometries(size):
        rule = rule_for(geometry.op, kind)
        expected = fill.of(geometry)
        if rule is None or not _fits(expected, value.dtype):
            continue
        after = rule(value.clone(), geometry)
        where = f"the {geometry.op!r} rule on {geometry!r}"
        require(
            tuple(after.shape[-2:]) == geometry.out_size,
            f"{where}: {kind.__name__} came out {tuple(after.shape)}, expected [..., "
            f"{geometry.out_size[0]}, {geometry.out_size[1]}]",
        )
        _require_fill(kind, where, after, _filled_pixels(geometry), expected, fill.why)


def _batch_of(values: Sequence[Tensor]) -> Tensor:
    """Per-sample values as a batch the way predictions come: ``[B, C, H, W]``.

    A ``[H, W]`` kind (a class mask) is batched as ``[2, 2, H, W]``: test-time
    augmentation applies a class mask's rule to logits, one channel per class.
    """
    if values[0].ndim == 2:
        return torch.stack(list(values[:4])).view(2, 2, *values[0].shape)
    return torch.stack(list(values[:2]))


def _batched_flip_error(
    kind: type[TargetKind], axis: str, shape: tuple[int, ...], gives: str
) -> str:
    return (
        f"the 'flip' rule of {kind.__name__} ({axis}) gives on a batch {shape} {gives} than on "
        "each of its samples. Test-time augmentation (pixcore.infer.Predictor(hflip=True)) "
        "applies it to batched predictions [B, C, H, W]: index dimensions from the end, "
        "x.flip(g.dim) (g.dim is -1 or -2) and x[..., c, :, :] for channel c, never x.flip(1) "
        "or x[0]"
    )


def _check_batched_flip(kind: type[TargetKind], make: KindMaker) -> None:
    """The flip rule gives on a batch what it gives on each sample (TTA flips batches)."""
    rule = rule_for("flip", kind)
    if rule is None or not kind.spatial:
        return
    size = (5, 7)
    values = [_plain(make(*size, torch.Generator().manual_seed(i))) for i in range(4)]
    batch = _batch_of(values)
    for axis in ("horizontal", "vertical"):
        geometry = Flip(size, axis=axis)
        expected = _batch_of([rule(v.clone(), geometry) for v in values])
        try:
            got = rule(batch.clone(), geometry)
        except Exception as error:  # noqa: BLE001 - any failure on a batch breaks TTA
            gives = f"an error ({type(error).__name__}: {error}) rather"
            message = _batched_flip_error(kind, axis, tuple(batch.shape), gives)
            raise ContractError(message) from error
        same = got.shape == expected.shape and (
            bool(torch.allclose(got, expected, rtol=1e-6, atol=1e-6, equal_nan=True))
            if got.is_floating_point() else bool(torch.equal(got, expected))
        )
        require(same, _batched_flip_error(kind, axis, tuple(batch.shape), "another result"))


def _check_filled_after(
    kind: type[TargetKind], name: str, after: Tensor, codes: Tensor, fill: _KindFill
) -> None:
    """After a transform: filled pixels (the tracker says which) hold the kind's fill."""
    filled = codes < _OFFSET
    if not bool(filled.any()):
        return
    if issubclass(kind, ClassMask):  # the tracker, a class mask, holds the transform's mask_fill
        expected = float(codes[filled][0])
    elif fill.constant is not None:
        expected = fill.constant
    else:
        return  # an image's fill is the transform's own parameter: probed directly
    flat = after.reshape(*after.shape[:-2], -1)
    _require_fill(kind, name, flat, filled, expected, fill.why)


def check_target_kind(
    kind: type[TargetKind],
    make: KindMaker,
    *,
    relation: Relation | None = None,
    fill: float | None = None,
    transforms: Any = None,
    max_examples: int | None = None,
    max_side: int = 16,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Check that every built-in transform handles a (third-party) target kind.

    First, directly on the kind's registered rules:

    * fill values: the ``crop`` and ``warp`` rules, on geometries that pad, must give the
      padded pixels the kind's fill: a class mask (a :class:`~pixcore.targets.ClassMask`
      subclass) the geometry's ``mask_fill`` (the ignore index; a real class id there
      would be learnt), a validity mask False, an image ``g.fill``, and any other kind
      ``fill`` (default 0: the sample's validity mask marks those pixels invalid);
    * batched use: the ``flip`` rule applied to a batch ``[B, C, H, W]`` (``[B, K, H, W]``
      for a ``[H, W]`` kind) must give what it gives on each sample, as test-time
      augmentation applies it to batched predictions: a rule must index dimensions from
      the end (``x.flip(g.dim)``; ``g.dim`` is negative).

    Then each example builds a sample with an image, a validity mask and ``make(height,
    width, generator)`` (a value of ``kind``), applies a random built-in transform
    (``transforms``: a hypothesis strategy, default :func:`builtin_transforms`), and
    checks that the value is not refused, keeps its kind and follows the image size,
    that photometric transforms leave it bit-identical, that filled pixels hold the
    fill (for class masks: the transform's ``mask_fill``), and that ``relation(before,
    after, source)`` holds, where ``source[i]`` is the flat input index of output pixel
    ``i`` (-1 where filled). The default relation says that every output pixel holds
    its source pixel's values (right for label-like kinds; give your own for vector
    kinds such as optical flow, which must also rotate).

    Raises:
        ContractError: A transform refused the kind or broke a property.
        ValueError: ``fill`` is given for a class mask, validity mask or image kind,
            whose fills are fixed.

    """
    st = _hypothesis().strategies
    relation = relation or _nearest_relation
    transforms = transforms if transforms is not None else builtin_transforms()
    kind_fill = _kind_fill(kind, fill)
    _check_fills(kind, make, kind_fill)
    _check_batched_flip(kind, make)

    def run(shape: tuple[int, int], seed: int, transform: Augmentation) -> None:
        h, w = shape
        g = torch.Generator().manual_seed(seed)
        value = make(h, w, g)
        require(isinstance(value, kind), f"make() returned {type(value).__name__}, not {kind.__name__}")
        sample: Sample = {
            "image": Image(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)),
            "valid": ValidityMask(torch.rand(h, w, generator=g) > 0.2),
            "new": value,
            _TRACK: ClassMask(torch.arange(h * w, dtype=torch.int64).view(h, w) + _OFFSET),
        }
        name = _name(transform)
        try:
            out = _call(transform, sample, seed)
        except Exception as error:  # noqa: BLE001
            raise ContractError(f"{name} refused target kind {kind.kind!r}: {error}") from error
        after = out["new"]
        require(type(after) is kind, f"{name} turned {kind.__name__} into {type(after).__name__}")
        if kind.spatial:
            require(
                tuple(after.shape[-2:]) == tuple(out["image"].shape[-2:]),
                f"{name}: {kind.__name__} is {tuple(after.shape)} but the image {tuple(out['image'].shape)}",
            )
        if getattr(transform, "photometric", False):
            require(_same(after, value), f"{name} (photometric) changed {kind.__name__}")
            return
        codes = _plain(out[_TRACK]).reshape(-1)
        if kind.spatial:
            _check_filled_after(kind, name, _plain(after), codes, kind_fill)
        source = torch.where(codes >= _OFFSET, codes - _OFFSET, torch.full_like(codes, -1))
        try:
            relation(_plain(value), _plain(after), source)
        except AssertionError as error:
            raise ContractError(f"{name}: {kind.__name__}: {error}") from error

    _run(
        run, max_examples, settings,
        shape=st.tuples(st.integers(1, max_side), st.integers(1, max_side)),
        seed=st.integers(0, 2**31 - 1),
        transform=transforms,
    )
