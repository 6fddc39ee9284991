"""File names for saved images that a person can map back to the input."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_NOT_SLUG: Final = re.compile(r"[^a-z0-9]+")
SLUG_LENGTH: Final = 40
FINGERPRINT_LENGTH: Final = 16


def slugify(text: str, limit: int = SLUG_LENGTH) -> str:
    """A short lower-case ASCII slug of ``text`` (``"A red fox!"`` becomes ``"a-red-fox"``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")
    if len(slug) > limit:
        cut = slug[:limit]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else cut
    return slug or "image"


def file_stem(prompt: str, fingerprint: str, occurrence: int = 0) -> str:
    """The file name, without extension, of one input: ``a-red-fox-3f2a9c1e0b7d5a64``.

    Built from what the input asks for (a slug of the prompt and the start of
    its request's fingerprint), never from its position, so an image keeps its
    name when lines move. The second and later occurrences of an identical
    request get ``-2``, ``-3``, ... Sixteen hex digits (64 bits) keep two
    requests with the same slug apart even in batches of millions.
    """
    stem = f"{slugify(prompt)}-{fingerprint[:FINGERPRINT_LENGTH]}"
    return stem if occurrence == 0 else f"{stem}-{occurrence + 1}"
