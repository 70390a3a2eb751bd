"""The modalities, one module each, and their table: a task's ``modality`` names its row.

``base.py`` says what a modality must provide; adding one means a module here and a row below.
"""

from __future__ import annotations

from convscope.data.modalities.base import Modality, PreparedData
from convscope.data.modalities.boxes import BoxModality
from convscope.data.modalities.image import ImageModality
from convscope.data.modalities.lab import LabModality
from convscope.data.modalities.scene import SceneModality
from convscope.data.modalities.text import TextModality
from convscope.registry import Registry

MODALITIES: Registry[Modality] = Registry("data modality")
for _name, _cls in (
    ("image", ImageModality),
    ("lab", LabModality),
    ("scene", SceneModality),
    ("text", TextModality),
    ("boxes", BoxModality),
):
    MODALITIES.register(_name)(_cls)


def get_modality(name: str) -> Modality:
    return MODALITIES.get(name)()


__all__ = ["MODALITIES", "Modality", "PreparedData", "get_modality"]
