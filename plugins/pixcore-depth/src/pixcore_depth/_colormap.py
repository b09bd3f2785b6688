"""A turbo colour map in numpy, for depth pictures without matplotlib."""

from __future__ import annotations

import numpy as np

__all__ = ["turbo"]

# Polynomial fit of Google's Turbo colour map (Mikhailov 2019), by Ruofei Du: each
# channel is c0 + c1 t + ... + c5 t^5 on t in [0, 1].
_TURBO = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def turbo(t: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` (clipped) -> RGB uint8 ``[..., 3]``: dark blue to cyan, green,
    yellow and red.

    No colour is pure black, which stays free to mark invalid pixels.
    """
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    powers = np.stack([t**k for k in range(6)], axis=-1)
    rgb = np.clip(powers @ _TURBO.T, 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)
