"""Imports every network family so that each registers its specs (see models.registry)."""

from models import i3d, small3d, tiny, torchvision_video  # noqa: F401
