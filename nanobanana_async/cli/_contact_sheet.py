"""``DIR/index.html``: a contact sheet of a run, built from the manifest's rows.

One static page, inline CSS, no JavaScript and nothing fetched from the
network: a summary of the counts per status, then the inputs that failed or
are in doubt (each with its reason), the saved images, and the inputs not
done yet. The page is rebuilt whole from the rows each time the manifest is,
so after a resume it says what the journal says.

No image library is available, so there are no thumbnail files: a card
shows the image itself, scaled down by CSS and loaded lazily, and links to
it. Nothing but ``index.html`` (through ``index.html.part``, renamed into
place) is written into the folder, whose top level keeps exactly one file
per image.

An image is referred to by a relative URL: its file name when it lies in
the folder (as every image a run saves does), else a relative path from the
folder, and a ``file:`` URI only when no relative path exists (another drive
on Windows), so the page still works when the folder is moved or served
as it is. A relative ``path`` in a row is taken from the current
directory, as the manifest's paths are. Text-only cards are capped per
section (:data:`MAX_TEXT_CARDS`) so a huge input keeps the page usable; every
image has its card.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any
from urllib.parse import quote

__all__ = ["CONTACT_SHEET", "MAX_TEXT_CARDS", "ContactSheet", "write_contact_sheet"]

CONTACT_SHEET = "index.html"
#: Cards without an image shown per section; the rest are counted (the manifest lists all).
MAX_TEXT_CARDS = 1000
#: Image cards are kept in memory up to this many bytes, then in an anonymous temp file.
_SPOOL_BYTES = 8 * 1024 * 1024
#: Statuses in the order the summary lists them (any other status follows).
_ORDER = (
    "saved",
    "failed",
    "uncertain",
    "invalid",
    "not_attempted",
    "pending",
    "submitting",
    "submitted",
    "completed",
)
#: Statuses of inputs still to do: a run goes on with them, or a rerun will.
_WAITING = frozenset({"not_attempted", "pending", "submitting", "submitted", "completed"})
#: What a card says when the row gives no reason of its own.
_WHY = {
    "not_attempted": "not sent: the run stopped before it; run the same command again",
    "pending": "waiting to be sent",
    "submitting": "being sent",
    "submitted": "sent; waiting for the image",
    "completed": "generated; being downloaded",
    "uncertain": "the create may have been billed without an answer",
}

_STYLE = """
:root{color-scheme:light dark;--line:#8884;--muted:#777;--bad:#c0392b;--doubt:#b7791f;--ok:#2f855a}
*{box-sizing:border-box}
body{margin:0;padding:1rem 1.5rem;font:14px/1.4 system-ui,sans-serif}
h1{font-size:1.4rem;margin:0 0 .5rem}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.summary{display:flex;flex-wrap:wrap;gap:.5rem;list-style:none;padding:0;margin:0}
.summary li{border:1px solid var(--line);border-radius:6px;padding:.2rem .6rem}
.summary a{color:inherit;text-decoration:none}
.summary b{font-size:1.1rem;margin-left:.3rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:.75rem}
.card{margin:0;border:1px solid var(--line);border-radius:8px;padding:.5rem;overflow:hidden}
.card img{display:block;width:100%;height:200px;object-fit:contain;background:#8881}
.card.failed,.card.invalid{border-color:var(--bad)}
.card.uncertain{border-color:var(--doubt)}
.prompt{margin:.4rem 0;max-height:6.5em;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere}
.meta{display:grid;grid-template-columns:auto 1fr;gap:0 .5rem;margin:0;color:var(--muted)}
.meta dd{margin:0;overflow-wrap:anywhere}
.file{margin:.3rem 0 0;font-family:ui-monospace,monospace;font-size:12px;overflow-wrap:anywhere}
.status{font-weight:600;text-transform:uppercase;font-size:12px;letter-spacing:.03em}
.failed .status,.invalid .status{color:var(--bad)}
.uncertain .status{color:var(--doubt)}
.saved .status{color:var(--ok)}
.reason{margin:.3rem 0;overflow-wrap:anywhere}
.more{color:var(--muted)}
"""


def write_contact_sheet(out_dir: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Rewrite ``out_dir/index.html`` atomically from manifest rows; return its path."""
    with ContactSheet(out_dir) as sheet:
        for row in rows:
            sheet.add(row)
        return sheet.write()


class ContactSheet:
    """Builds ``index.html`` one row at a time, so rows can be streamed (a million is fine).

    Image cards are spooled (in memory, past 8 MiB in an anonymous temp file
    outside the folder); text cards are capped; :meth:`write` puts the page
    together under a temporary name and renames it into place.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / CONTACT_SHEET
        self._base = os.path.abspath(out_dir)
        self._counts: Counter[str] = Counter()
        self._images = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close()
            max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8", errors="replace"
        )
        self._attention = _Cards("problems", "Failed or in doubt")
        self._waiting = _Cards("waiting", "Not done yet")

    def __enter__(self) -> ContactSheet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drop the spooled cards (the page is not written)."""
        self._images.close()

    def add(self, row: Mapping[str, Any]) -> None:
        """Add one manifest row: an image card if it names a file, else a text card."""
        status = str(row.get("status") or "unknown")
        self._counts[status] += 1
        path = row.get("path")
        if path:
            self._images.write(self._image_card(row, status, str(path)))
            return
        cards = self._waiting if status in _WAITING else self._attention
        cards.add(row, status)

    def write(self) -> Path:
        """Write the page to ``index.html.part`` and rename it to ``index.html``."""
        # Named per process: workers sharing a PostgreSQL batch may share this folder.
        temp = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
        with temp.open("w", encoding="utf-8", errors="replace") as page:
            page.write(self._head())
            page.write(self._attention.html())
            page.write('<section id="images"><h2>Images</h2>\n<div class="grid">\n')
            self._images.seek(0)
            while chunk := self._images.read(1 << 16):
                page.write(chunk)
            page.write("</div></section>\n")
            page.write(self._waiting.html())
            page.write("</main></body></html>\n")
        temp.replace(self.path)
        return self.path

    def _head(self) -> str:
        total = sum(self._counts.values())
        known = [status for status in _ORDER if status in self._counts]
        others = sorted(status for status in self._counts if status not in _ORDER)
        items = "".join(
            f'<li class="{_attr(status)}"><a href="#{_section_of(status)}">'
            f"{escape(_label(status))}<b>{count}</b></a></li>"
            for status in known + others
            if (count := self._counts[status])
        )
        saved = self._counts["saved"]
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>nanobanana: {saved} of {total} saved</title>\n"
            f"<style>{_STYLE}</style></head>\n<body><main>\n"
            f"<header><h1>nanobanana run: {saved} of {total} inputs saved</h1>\n"
            f'<ul class="summary"><li>inputs<b>{total}</b></li>{items}</ul>\n'
            '<p class="more">Rebuilt from the journal whenever manifest.jsonl is; '
            "each image is shown scaled down: open it for its full size.</p>"
            "</header>\n"
        )

    def _image_card(self, row: Mapping[str, Any], status: str, path: str) -> str:
        name = PurePath(path).name
        url = escape(self._url(path))
        badge = "" if status == "saved" else f'<p class="status">{escape(_label(status))}</p>'
        return (
            f'<figure class="card {_attr(status)}"><a href="{url}">'
            f'<img src="{url}" alt="{escape(name)}" loading="lazy" decoding="async"></a>'
            f"<figcaption>{badge}{_prompt(row)}{_meta(row)}"
            f'<p class="file"><a href="{url}">{escape(name)}</a></p></figcaption></figure>\n'
        )

    def _url(self, path: str) -> str:
        """A URL for ``path`` from the folder: the quoted file name when it lies there."""
        full = os.path.abspath(path)
        folder, name = os.path.split(full)
        if folder == self._base:
            return quote(name, safe="")
        try:
            relative = os.path.relpath(full, self._base)
        except ValueError:  # another drive (Windows): no relative path exists
            return Path(full).as_uri()
        return quote(PurePath(relative).as_posix(), safe="/")


def _text_card(row: Mapping[str, Any], status: str) -> str:
    reason = row.get("error") or _WHY.get(status, "")
    kind = row.get("error_type")
    said = f"{kind}: {reason}" if kind and reason else str(reason or kind or "")
    return (
        f'<figure class="card {_attr(status)}"><p class="status">{escape(_label(status))}</p>'
        f'<p class="reason">{escape(said)}</p>{_prompt(row)}{_meta(row)}</figure>\n'
    )


class _Cards:
    """One section of text cards: the first :data:`MAX_TEXT_CARDS`, and how many in all."""

    def __init__(self, anchor: str, title: str) -> None:
        self._anchor = anchor
        self._title = title
        self._cards: list[str] = []
        self._count = 0

    def add(self, row: Mapping[str, Any], status: str) -> None:
        self._count += 1
        if len(self._cards) < MAX_TEXT_CARDS:
            self._cards.append(_text_card(row, status))

    def html(self) -> str:
        """The section, or nothing when it has no card."""
        if not self._count:
            return ""
        more = self._count - len(self._cards)
        tail = (
            f'<p class="more">and {more} more, not shown here: manifest.jsonl lists them all.</p>\n'
            if more > 0
            else ""
        )
        return (
            f'<section id="{self._anchor}"><h2>{self._title} ({self._count})</h2>\n'
            f'<div class="grid">\n{"".join(self._cards)}</div>\n{tail}</section>\n'
        )


def _prompt(row: Mapping[str, Any]) -> str:
    prompt = row.get("prompt")
    return f'<p class="prompt">{escape(str(prompt))}</p>' if prompt is not None else ""


def _meta(row: Mapping[str, Any]) -> str:
    settings = "".join(
        f"<dt>{name}</dt><dd>{_value(row.get(name))}</dd>"
        for name in ("model", "resolution", "size")
    )
    line, index = row.get("line"), row.get("index")
    if line is not None:
        settings += f"<dt>line</dt><dd>{escape(str(line))}</dd>"
    elif index is not None:  # standard input: no line numbers, the input's index
        settings += f"<dt>index</dt><dd>{escape(str(index))}</dd>"
    return f'<dl class="meta">{settings}</dl>'


def _section_of(status: str) -> str:
    """The anchor of the section that shows rows of ``status`` (image rows aside)."""
    if status == "saved":
        return "images"
    return "waiting" if status in _WAITING else "problems"


def _value(value: Any) -> str:
    """A setting as HTML text; an unset one is the service's default."""
    return "default" if value is None else escape(str(value))


def _label(status: str) -> str:
    return status.replace("_", " ")


def _attr(status: str) -> str:
    """A status as a CSS class: letters, digits, hyphens and underscores only."""
    return "".join(char if char.isalnum() or char in "-_" else "-" for char in status)
