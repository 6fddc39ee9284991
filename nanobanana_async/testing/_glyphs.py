"""A 5x7 bitmap font and the caption layout that writes a prompt's first words into an image.

The simulator draws the start of each task's prompt into its picture so that a
folder of simulated images shows which image answers which prompt. The font is
drawn here by hand (no dependency, nothing copied): printable ASCII, capitals
and digits 7 rows tall, lowercase with one row of descender (8 rows in all).

Other characters are brought to ASCII where that reads naturally: accents are
dropped (``é`` -> ``e``, by Unicode decomposition), compatibility forms are
unfolded (full-width letters, ligatures, ``…`` -> ``...``), a few letters and
typographic marks are spelled out (``ß`` -> ``ss``, curly quotes, dashes).
Anything else (Chinese, Cyrillic, emoji...) is drawn as a hollow box,
one per character, so the caption still shows how much text there was;
control and format characters (zero-width joiners) draw nothing.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

#: The character that stands for anything the font cannot draw (drawn as a box).
BOX: Final = "\x7f"
GLYPH_WIDTH: Final = 5
GLYPH_HEIGHT: Final = 8
"""Rows of a glyph: 7 above the baseline plus one of descender."""
CELL_WIDTH: Final = GLYPH_WIDTH + 1
LINE_HEIGHT: Final = GLYPH_HEIGHT + 1
_MARGIN: Final = 2
"""Blank font pixels left of the text and above the first line."""
_COLUMNS: Final = 20
"""About how many characters a line holds: it sets the font's scale."""

# Each glyph is up to 8 rows of 5 pixels, top to bottom; "#" is ink.
_FONT: Final[dict[str, str]] = {
    " ": "",
    "!": "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",
    '"': ".#.#. .#.#. .#.#.",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    "$": "..#.. .#### #.#.. .###. ..#.# ####. ..#..",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "&": ".##.. #..#. #.#.. .#... #.#.# #..#. .##.#",
    "'": "..#.. ..#.. .#...",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "*": "..... ..#.. #.#.# .###. #.#.# ..#..",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#..",
    ",": "..... ..... ..... ..... ..... .##.. ..#.. .#...",
    "-": "..... ..... ..... .###.",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    "/": "..... ....# ...#. ..#.. .#... #....",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    ":": "..... .##.. .##.. ..... .##.. .##..",
    ";": "..... .##.. .##.. ..... .##.. ..#.. .#...",
    "<": "...#. ..#.. .#... #.... .#... ..#.. ...#.",
    "=": "..... ..... ##### ..... #####",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "@": ".###. #...# ....# .##.# #.#.# #.#.# .###.",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "###.. #..#. #...# #...# #...# #..#. ###..",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "[": ".###. .#... .#... .#... .#... .#... .###.",
    "\\": "..... #.... .#... ..#.. ...#. ....#",
    "]": ".###. ...#. ...#. ...#. ...#. ...#. .###.",
    "^": "..#.. .#.#. #...#",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "`": ".#... ..#.. ...#.",
    "a": "..... ..... .###. ....# .#### #...# .####",
    "b": "#.... #.... #.##. ##..# #...# #...# ####.",
    "c": "..... ..... .###. #.... #.... #...# .###.",
    "d": "....# ....# .##.# #..## #...# #...# .####",
    "e": "..... ..... .###. #...# ##### #.... .###.",
    "f": "..##. .#..# .#... ###.. .#... .#... .#...",
    "g": "..... ..... .#### #...# #...# .#### ....# .###.",
    "h": "#.... #.... #.##. ##..# #...# #...# #...#",
    "i": "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",
    "j": "...#. ..... ..##. ...#. ...#. ...#. #..#. .##..",
    "k": "#.... #.... #..#. #.#.. ##... #.#.. #..#.",
    "l": ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "m": "..... ..... ##.#. #.#.# #.#.# #...# #...#",
    "n": "..... ..... #.##. ##..# #...# #...# #...#",
    "o": "..... ..... .###. #...# #...# #...# .###.",
    "p": "..... ..... ####. #...# #...# ####. #.... #....",
    "q": "..... ..... .#### #...# #...# .#### ....# ....#",
    "r": "..... ..... #.##. ##..# #.... #.... #....",
    "s": "..... ..... .###. #.... .###. ....# ####.",
    "t": ".#... .#... ###.. .#... .#... .#..# ..##.",
    "u": "..... ..... #...# #...# #...# #..## .##.#",
    "v": "..... ..... #...# #...# #...# .#.#. ..#..",
    "w": "..... ..... #...# #...# #.#.# #.#.# .#.#.",
    "x": "..... ..... #...# .#.#. ..#.. .#.#. #...#",
    "y": "..... ..... #...# #...# #...# .#### ....# .###.",
    "z": "..... ..... ##### ...#. ..#.. .#... #####",
    "{": "...#. ..#.. ..#.. .#... ..#.. ..#.. ...#.",
    "|": "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "}": ".#... ..#.. ..#.. ...#. ..#.. ..#.. .#...",
    "~": "..... ..... .#... #.#.# ...#.",
    BOX: "##### #...# #...# #...# #...# #...# #####",
}

# Spelled out rather than boxed: letters with no decomposition, and typographic marks.
_SPELLED: Final[dict[str, str]] = {
    "\u00df": "ss",  # sharp s
    "\u00e6": "ae",
    "\u00c6": "AE",
    "\u0153": "oe",
    "\u0152": "OE",
    "\u00f8": "o",
    "\u00d8": "O",
    "\u0142": "l",
    "\u0141": "L",
    "\u0111": "d",
    "\u0110": "D",
    "\u00f0": "d",
    "\u00fe": "th",
    "\u00de": "Th",
    "\u0131": "i",  # dotless i
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": ",",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2010": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u2022": "*",
    "\u00b7": ".",
}
_INVISIBLE: Final = frozenset({"Cc", "Cf", "Cs"})
"""Control, format and lone surrogate code points: they draw nothing."""


def glyph_rows(char: str) -> tuple[str, ...]:
    """The 8 rows of ``char``'s glyph as strings of "#" (ink) and "." (a box if unknown)."""
    rows = _FONT.get(char, _FONT[BOX]).split()
    return tuple(rows) + ("." * GLYPH_WIDTH,) * (GLYPH_HEIGHT - len(rows))


def transliterate(text: str) -> str:
    """``text`` in the font's characters: see the module docstring for what becomes what."""
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", text):
        if " " <= char <= "~":
            out.append(char)
        elif char.isspace():
            out.append(" ")
        elif unicodedata.combining(char):
            continue
        elif char in _SPELLED:
            out.append(_SPELLED[char])
        elif unicodedata.category(char) not in _INVISIBLE:
            out.append(BOX)
    return "".join(out)


def _pieces(words: Sequence[str], columns: int) -> Iterator[str]:
    """The words, a word longer than a line cut into line-long pieces."""
    for word in words:
        for start in range(0, len(word), columns):
            yield word[start : start + columns]


def fit_text(prompt: str, columns: int, lines: int) -> tuple[str, ...]:
    """The prompt's first words wrapped into at most ``lines`` lines of ``columns`` characters.

    Words are kept whole where they fit; a line ends in "..." when the prompt goes on.
    """
    # Only the start can show, so a huge prompt costs no more than a short one.
    budget = columns * lines * 2 + 16
    words = transliterate(prompt[:budget]).split()
    rows = [""]
    more = len(prompt) > budget
    for piece in _pieces(words, columns):
        row = rows[-1]
        if not row:
            rows[-1] = piece
        elif len(row) + 1 + len(piece) <= columns:
            rows[-1] = f"{row} {piece}"
        elif len(rows) < lines:
            rows.append(piece)
        else:
            more = True
            break
    if more and columns > 3:
        last = rows[-1].rstrip(" ,;:-")
        if len(last) + 3 > columns:  # make room, dropping a word cut in two if there are others
            cut = last[: columns - 3]
            last = cut.rsplit(" ", 1)[0] if last[len(cut)] != " " and " " in cut else cut
        rows[-1] = last.rstrip(" ,;:-") + "..."
    return tuple(rows) if rows[0] else ()


class CaptionLayout(NamedTuple):
    """Where a caption goes in an image: font scale, lines and characters per line, band rows."""

    scale: int
    lines: int
    columns: int
    band_height: int
    """Pixel rows of the caption band at the bottom of the image."""


def band_rows(lines: int) -> int:
    """Font pixels from the band's top to its bottom for this many lines of text."""
    return _MARGIN + lines * LINE_HEIGHT + 1


def caption_layout(width: int, height: int) -> CaptionLayout | None:
    """The caption for a ``width`` x ``height`` image (None if not even one character fits).

    The font grows with the image so a line holds about 20 characters; the band
    takes two lines, or one if two would cover more than half the picture (then
    all of it if need be: images under 12 pixels tall or 10 wide get none).
    """
    scale = max(1, min(width // (CELL_WIDTH * _COLUMNS), height // (2 * band_rows(2))))
    columns = (width - 2 * _MARGIN * scale) // (CELL_WIDTH * scale)
    if columns < 1:
        return None
    for lines, room in ((2, height // 2), (1, height // 2), (1, height)):
        if band_rows(lines) * scale <= room:
            return CaptionLayout(scale, lines, columns, band_rows(lines) * scale)
    return None


@functools.lru_cache(maxsize=16)
def _cells(scale: int, ink: int) -> dict[str, tuple[bytes, ...]]:
    """Per character, its 8 glyph rows as RGB bytes (``ink`` or 0), each ``CELL_WIDTH * scale``."""
    pixels = {"#": bytes((ink,)) * 3 * scale, ".": bytes(3 * scale)}
    return {
        char: tuple(b"".join(pixels[bit] for bit in row + ".") for row in glyph_rows(char))
        for char in _FONT
    }


def draw(text: Sequence[str], width: int, layout: CaptionLayout, ink: int = 1) -> bytes:
    """The caption band as RGB bytes, ``width * 3`` per row: ``ink`` where a glyph is, else 0.

    ``text`` (from :func:`fit_text`) is left-aligned and centred vertically when
    it has fewer lines than the layout. All three bytes of an ink pixel are ``ink``.
    """
    text = text[: layout.lines]
    scale = layout.scale
    cells = _cells(scale, ink)
    box = cells[BOX]
    stride = width * 3
    blank = bytes(stride)
    left = bytes(_MARGIN * scale * 3)
    top = (_MARGIN + (layout.lines - len(text)) * LINE_HEIGHT // 2) * scale
    rows = [blank] * top
    for line in text:
        glyphs = [cells.get(char, box) for char in line[: layout.columns]]
        for y in range(GLYPH_HEIGHT):
            row = left + b"".join(glyph[y] for glyph in glyphs)
            rows.extend([row + bytes(stride - len(row))] * scale)
        rows.extend([blank] * scale)
    rows.extend([blank] * (layout.band_height - len(rows)))
    return b"".join(rows)
