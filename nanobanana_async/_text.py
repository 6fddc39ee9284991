"""Making text that came from the service safe to show: printable, bounded and redacted."""

from __future__ import annotations

import re
from typing import Final

_SECRETISH: Final = re.compile(
    r"(?i)(bearer\s+|(?:api[_-]?key|access[_-]?token|token|secret)[\"']?\s*[=:]\s*[\"']?)"
    r"[^\s\"'&<>,;]+"
)


def clean_text(text: str, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters, credentials redacted.

    Lone surrogates (valid in JSON, unprintable in UTF-8) and control characters
    become ``?``, so the result can always be logged, printed and encoded.
    """
    text = text[: limit * 4].encode("utf-8", errors="replace").decode("utf-8")
    text = _SECRETISH.sub(r"\1<redacted>", text)
    text = " ".join(text.split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
