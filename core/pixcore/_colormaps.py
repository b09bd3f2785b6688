"""Colour maps shared by the pictures of the torch path (:mod:`pixcore.viz`) and the
torch-free ONNX Runtime path (:mod:`pixcore.export._pictures`); numpy only."""

from __future__ import annotations

import numpy as np

__all__ = ["TURBO_ANCHORS", "TURBO_POSITIONS"]

# Google's Turbo colour map (Mikhailov, "Turbo, an improved rainbow colormap for
# visualization", Google AI blog, 2019; Apache-2.0): every 8th entry of its published
# 256-entry table, and the last. Interpolating linearly between them stays within 2/255
# of the full table.
TURBO_ANCHORS = np.array(
    [
        (0.18995, 0.07176, 0.23217),
        (0.22500, 0.16354, 0.45096),
        (0.25107, 0.25237, 0.63374),
        (0.26816, 0.33825, 0.78050),
        (0.27628, 0.42118, 0.89123),
        (0.27543, 0.50115, 0.96594),
        (0.25862, 0.57958, 0.99876),
        (0.21382, 0.65886, 0.97959),
        (0.15844, 0.73551, 0.92305),
        (0.11167, 0.80569, 0.84525),
        (0.09267, 0.86554, 0.76230),
        (0.12014, 0.91193, 0.68660),
        (0.19659, 0.94901, 0.59466),
        (0.30513, 0.97697, 0.48987),
        (0.42778, 0.99419, 0.38575),
        (0.54658, 0.99907, 0.29581),
        (0.64362, 0.98999, 0.23356),
        (0.72596, 0.96470, 0.20640),
        (0.80473, 0.92452, 0.20459),
        (0.87530, 0.87267, 0.21555),
        (0.93301, 0.81236, 0.22667),
        (0.97323, 0.74682, 0.22536),
        (0.99314, 0.67408, 0.20348),
        (0.99593, 0.58703, 0.16899),
        (0.98360, 0.49291, 0.12849),
        (0.95801, 0.39958, 0.08831),
        (0.92105, 0.31489, 0.05475),
        (0.87422, 0.24526, 0.03297),
        (0.81608, 0.18462, 0.01809),
        (0.74617, 0.13098, 0.00851),
        (0.66449, 0.08436, 0.00424),
        (0.57103, 0.04474, 0.00529),
        (0.47960, 0.01583, 0.01055),
    ]
)
TURBO_POSITIONS = np.array([*range(0, 256, 8), 255], dtype=np.float64) / 255.0
