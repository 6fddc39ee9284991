"""The service's closed vocabularies: models, resolutions and aspect ratios.

Kept in one place so the request validator, the simulator and the CLI agree
on exactly what the service's create call allows.
"""

from __future__ import annotations

from typing import Final

MODELS: Final[tuple[str, ...]] = (
    "nano-banana",
    "nano-banana-pro",
    "nano-banana-pro-stable",
    "nano-banana-2-stable",
    "nano-banana-2",
)
RESOLUTIONS: Final[tuple[str, ...]] = ("1k", "2k", "4k")
SIZES: Final[tuple[str, ...]] = (
    "1:1",
    "16:9",
    "9:16",
    "4:3",
    "3:4",
    "3:2",
    "2:3",
    "5:4",
    "4:5",
    "21:9",
)
MAX_IMAGE_URLS: Final = 6
DEFAULT_MODEL: Final = "nano-banana-2"
#: Models the service documents as ignoring ``resolution`` (the 2 and pro families honour it).
IGNORES_RESOLUTION: Final = frozenset({"nano-banana"})
