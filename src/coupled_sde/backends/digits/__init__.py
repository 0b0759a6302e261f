"""The shipped 8x8 handwritten-digits models (a class-conditional rectified flow and a classifier).

See :mod:`coupled_sde.backends.digits.network` for the conventions; the weights live in
``weights/`` and are produced by ``scripts/train_digits.py``.
"""

from __future__ import annotations

from .backbone import DEFAULT_GUIDANCE, DigitsBackbone
from .network import (
    NULL_CLASS,
    NUM_CLASSES,
    DigitsClassifier,
    DigitsFlowNet,
    load_classifier,
    load_flow_network,
    load_heldout,
    model_to_pixels,
    pixels_to_model,
)

__all__ = [
    "DEFAULT_GUIDANCE",
    "DigitsBackbone",
    "NULL_CLASS",
    "NUM_CLASSES",
    "DigitsClassifier",
    "DigitsFlowNet",
    "load_classifier",
    "load_flow_network",
    "load_heldout",
    "model_to_pixels",
    "pixels_to_model",
]
