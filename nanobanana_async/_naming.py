"""File names for saved images that a person can map back to the input."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_HYPHENS: Final = re.compile(r"-{2,}")
SLUG_LENGTH: Final = 40
FINGERPRINT_LENGTH: Final = 16


def _slug_char(char: str, previous: str) -> str:
    """``char`` as it goes into a slug: a lower-case letter or digit, else a hyphen."""
    bare = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
    if len(bare) == 1 and bare.isalnum():  # Latin letters lose their accents: é -> e
        return bare.lower()
    if char.isalnum():  # letters and digits of every other script stay as they are
        return char.lower()
    if unicodedata.category(char).startswith("M") and previous not in ("", "-"):
        return char  # a combining mark stays on the letter it belongs to
    return "-"


def slugify(text: str, limit: int = SLUG_LENGTH) -> str:
    """A short lower-case slug of ``text``, safe as a file name on every OS.

    ``"A red fox!"`` becomes ``"a-red-fox"``, ``"Ünïcödé café"`` ``"unicode-cafe"``,
    ``"日本の桜"`` stays ``"日本の桜"`` and ``"лиса в снегу"`` becomes
    ``"лиса-в-снегу"``: letters and digits of any script are kept, everything
    else (spaces, punctuation, symbols, path separators, control and direction
    marks) becomes one hyphen. At most ``limit`` characters; ``"image"`` when
    nothing is left.
    """
    chars: list[str] = []
    for char in unicodedata.normalize("NFKC", text):
        chars.append(_slug_char(char, chars[-1] if chars else ""))
    slug = _HYPHENS.sub("-", "".join(chars)).strip("-")
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
