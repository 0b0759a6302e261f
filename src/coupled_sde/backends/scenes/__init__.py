"""The shipped 32x32 RGB scene model: a coloured shape over a natural texture.

A conditional rectified flow on (shape, colour, texture) with a null condition for guidance, its
held-out attribute classifier, and the procedural scenes (with exact edit ground truth and object
masks) they were trained on. Weights and the texture bank live in ``weights/`` and are produced by
``scripts/train_scenes.py``; see ``weights/training.json`` for the training record.
"""

from __future__ import annotations

from .backbone import DEFAULT_GUIDANCE, SceneBackbone, parse_scene
from .data import COLOURS, SHAPES, SIZE, TEXTURES, SceneParams, load_textures, render, sample_params
from .network import ATTRIBUTES, N_VALUES, NULL_LABELS, SceneClassifier, SceneFlowNet, load_scene_classifier, load_scene_flow

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "DEFAULT_GUIDANCE",
    "N_VALUES",
    "NULL_LABELS",
    "SHAPES",
    "SIZE",
    "TEXTURES",
    "SceneBackbone",
    "SceneClassifier",
    "SceneFlowNet",
    "SceneParams",
    "load_scene_classifier",
    "load_scene_flow",
    "load_textures",
    "parse_scene",
    "render",
    "sample_params",
]
