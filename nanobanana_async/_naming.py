"""File names for saved images that a person can map back to the input."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_NOT_SLUG: Final = re.compile(r"[^a-z0-9]+")
SLUG_LENGTH: Final = 40


def slugify(text: str, limit: int = SLUG_LENGTH) -> str:
    """A short lower-case ASCII slug of ``text`` (``"A red fox!"`` becomes ``"a-red-fox"``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")
    if len(slug) > limit:
        cut = slug[:limit]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else cut
    return slug or "image"


def file_stem(index: int, prompt: str) -> str:
    """The file name, without extension, of input ``index``: ``00042-a-red-fox``."""
    return f"{index:05d}-{slugify(prompt)}"
