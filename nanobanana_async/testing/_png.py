"""Real PNG bytes for the simulated file host, captioned with the start of each prompt.

The images are valid RGB PNGs (signature, IHDR, one zlib IDAT, IEND) so an SDK
can check magic bytes and trailers exactly as it would on the real service. The
picture is a gradient with low-order noise: the noise keeps the file close to
a photo's size (about 97% of ``width * height * 3`` bytes) instead of the few
hundred bytes a flat gradient compresses to, so downloads move realistic data.

A band at the bottom shows the first words of the task's prompt, dark on a
light tint (font and layout in ``_glyphs``), so a folder of simulated images
says which image answers which prompt. The gradient (one of ``VARIANTS``) and
the tint come from a hash of the whole prompt, so prompts that start alike
still look different. Images too small for one character get no band.

Rendering and compressing a noisy picture costs milliseconds (about 7 ms at
266 px, 26 at 512, 100 at 1024), too much per prompt. So each background (size,
variant) is compressed once, up to the band, as a zlib stream cut at a byte
boundary (``Z_SYNC_FLUSH``); a prompt's band is appended as stored deflate
blocks (noise barely compresses anyway) and the Adler-32 and CRC-32 sums carry
on from the cached prefix: about 0.15 ms per new prompt at 266 px, 0.4 at 512,
1.5 at 1024, and 0.5% more bytes. Finished images are kept in an LRU bounded
by bytes, so asking again for a prompt costs a lookup.

Without a prompt, or with captions off (the benchmarks), a task gets one of
``VARIANTS`` plain pictures per size picked by its id, cached whole: serving
one costs a dictionary lookup.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from random import Random
from typing import Final

import attrs

from .._vocabulary import SIZES
from ._glyphs import CaptionLayout, caption_layout, draw, fit_text

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: How many differently coloured backgrounds exist per size.
VARIANTS: Final = 8
_NOISE_MASK: Final = 0x1F
_INK: Final = 0x20
"""The bit that marks a band byte as ink, above the 5 noise bits."""
_CHANNEL: Final = 0x40
"""A band byte's top 2 bits say its channel (red 0, green 1, blue 2)."""
_CHANNEL_NOISE: Final = tuple(
    bytes(channel * _CHANNEL | value & _NOISE_MASK for value in range(256)) for channel in range(3)
)
"""Per channel, the ``bytes.translate`` table from a pixel byte to its band byte before ink."""
_ZLIB_HEADER: Final = b"\x78\x9c"
"""Deflate with a 32 KiB window, default level: what ``zlib.compress`` writes."""
_CAPTIONED_CACHE_BYTES: Final = 32 * 1024 * 1024


def dimensions(size: str, long_side: int) -> tuple[int, int]:
    """Width and height of an image with aspect ratio ``size`` ("16:9") and this long side."""
    across, down = (int(part) for part in size.split(":", 1))
    if across >= down:
        return long_side, max(1, round(long_side * down / across))
    return max(1, round(long_side * across / down)), long_side


def _chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


_IEND: Final = _chunk(b"IEND", b"")


def _ihdr(width: int, height: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def _scanlines(pixels: bytes | bytearray, width: int) -> bytes:
    """The rows of ``pixels`` each behind filter byte 0 (None), as PNG's IDAT wants them."""
    stride = width * 3
    view = memoryview(pixels)
    return b"\x00" + b"\x00".join(
        view[start : start + stride] for start in range(0, len(view), stride)
    )


def encode_rgb(width: int, height: int, pixels: bytes) -> bytes:
    """Encode ``height`` rows of ``width`` RGB pixels (8 bits per channel) as a PNG."""
    if len(pixels) != width * height * 3:
        raise ValueError("pixel data does not match width * height * 3")
    idat = zlib.compress(_scanlines(pixels, width), 6)
    return b"".join((PNG_SIGNATURE, _ihdr(width, height), _chunk(b"IDAT", idat), _IEND))


def render(width: int, height: int, variant: int) -> bytes:
    """RGB pixels of a seeded gradient: red across, green down, blue diagonal, plus noise."""
    rng = Random(variant)
    red0, green0, blue0 = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    reds = bytes((red0 + x * 255 // max(1, width - 1)) % 256 for x in range(width))
    ramp = bytes((blue0 + x * 255 // max(1, width - 1)) % 256 for x in range(width))
    ramp2 = ramp + ramp
    image = bytearray(width * height * 3)
    row = bytearray(width * 3)
    for y in range(height):
        row[0::3] = reds
        row[1::3] = bytes(((green0 + y * 255 // max(1, height - 1)) % 256,)) * width
        shift = y % width
        row[2::3] = ramp2[shift : shift + width]
        image[y * width * 3 : (y + 1) * width * 3] = row
    size = len(image)
    noise = int.from_bytes(rng.randbytes(size), "big") & int.from_bytes(
        bytes((_NOISE_MASK,)) * size, "big"
    )
    return (int.from_bytes(image, "big") ^ noise).to_bytes(size, "big")


@functools.lru_cache(maxsize=64)
def _channel_table(tint: int) -> bytes:
    """Band byte (ink bit, 5 noise bits) -> value: ink is its noise (dark), else tint less it."""
    return bytes(
        value & _NOISE_MASK if value & _INK else tint - (value & _NOISE_MASK)
        for value in range(_CHANNEL)
    )


def _band_table(tint: bytes) -> bytes:
    """The ``bytes.translate`` table that colours a whole band (channel in the top 2 bits)."""
    return b"".join(_channel_table(value) for value in tint) + bytes(_CHANNEL)


@attrs.frozen
class _Background:
    """One picture compressed up to its caption band, and what a band needs to finish it."""

    width: int
    layout: CaptionLayout
    ihdr: bytes
    head: bytes
    """The zlib header and a deflate stream of the rows above the band, byte-aligned, unfinished."""
    adler: int
    """Adler-32 of the rows above the band (with their filter bytes)."""
    crc: int
    """CRC-32 of ``b"IDAT" + head``."""
    band: int
    """The band's noise bytes with their channel in the top 2 bits, as one big-endian integer."""

    @classmethod
    def build(cls, width: int, height: int, variant: int, layout: CaptionLayout) -> _Background:
        """Render the picture and compress everything above the band (the slow part, once)."""
        pixels = render(width, height, variant)
        split = (height - layout.band_height) * width * 3
        above = _scanlines(pixels[:split], width) if split else b""
        deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        head = _ZLIB_HEADER + deflate.compress(above) + deflate.flush(zlib.Z_SYNC_FLUSH)
        band = bytearray(len(pixels) - split)
        for channel, table in enumerate(_CHANNEL_NOISE):
            band[channel::3] = pixels[split + channel :: 3].translate(table)
        return cls(
            width=width,
            layout=layout,
            ihdr=_ihdr(width, height),
            head=head,
            adler=zlib.adler32(above),
            crc=zlib.crc32(b"IDAT" + head),
            band=int.from_bytes(band, "big"),
        )

    def with_caption(self, text: Sequence[str], tint: bytes) -> bytes:
        """The whole PNG with ``text`` drawn on a band of colour ``tint`` (3 bytes, 0xC0-0xFF)."""
        ink = draw(text, self.width, self.layout, _INK)
        # Each byte now holds channel, ink bit and noise: one table colours the band.
        marked = (int.from_bytes(ink, "big") | self.band).to_bytes(len(ink), "big")
        rows = _scanlines(marked.translate(_band_table(tint)), self.width)
        deflate = zlib.compressobj(0, zlib.DEFLATED, -zlib.MAX_WBITS)
        tail = deflate.compress(rows) + deflate.flush()
        trailer = struct.pack(">I", zlib.adler32(rows, self.adler))
        crc = zlib.crc32(trailer, zlib.crc32(tail, self.crc))
        length = struct.pack(">I", len(self.head) + len(tail) + len(trailer))
        idat = (length, b"IDAT", self.head, tail, trailer, struct.pack(">I", crc))
        return b"".join((PNG_SIGNATURE, self.ihdr, *idat, _IEND))


class ImageCache:
    """The PNGs the file host serves, at one long side, rendered on first use and cached.

    ``captions=False`` serves only the plain pictures, whatever the prompt.
    """

    def __init__(self, long_side: int, *, captions: bool = True) -> None:
        if not 1 <= long_side <= 16384:
            raise ValueError("image_long_side must be between 1 and 16384 pixels")
        self.long_side = long_side
        self.captions = captions
        self._plain: dict[tuple[str, int], bytes] = {}
        self._backgrounds: dict[tuple[str, int], _Background | None] = {}
        self._captioned: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._captioned_bytes = 0

    def get(self, size: str, variant: int) -> bytes:
        """The plain PNG for aspect ratio ``size`` (one of SIZES; others fall back to 1:1)."""
        key = (size if size in SIZES else "1:1", variant % VARIANTS)
        data = self._plain.get(key)
        if data is None:
            width, height = dimensions(key[0], self.long_side)
            data = encode_rgb(width, height, render(width, height, key[1]))
            self._plain[key] = data
        return data

    def for_prompt(self, size: str, prompt: str) -> bytes:
        """The PNG answering ``prompt``: its first words on a band, colours from its hash."""
        size = size if size in SIZES else "1:1"
        digest = hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=4).digest()
        variant = digest[0] % VARIANTS
        background = self._background(size, variant)
        if background is None:
            return self.get(size, variant)
        tint = bytes(0xC0 | (byte & 0x3F) for byte in digest[1:])
        text = fit_text(prompt, background.layout.columns, background.layout.lines)
        key = (size, variant, tint, text)
        data = self._captioned.get(key)
        if data is not None:
            self._captioned.move_to_end(key)
            return data
        data = background.with_caption(text, tint)
        self._remember(key, data)
        return data

    def for_task(self, task_id: str, size: str, prompt: str | None = None) -> bytes:
        """The PNG served for one task: captioned with its prompt, else picked by its id."""
        if prompt is not None and self.captions:
            return self.for_prompt(size, prompt)
        return self.get(size, zlib.crc32(task_id.encode()))

    def _background(self, size: str, variant: int) -> _Background | None:
        key = (size, variant)
        if key not in self._backgrounds:
            width, height = dimensions(size, self.long_side)
            layout = caption_layout(width, height)
            self._backgrounds[key] = (
                None if layout is None else _Background.build(width, height, variant, layout)
            )
        return self._backgrounds[key]

    def _remember(self, key: tuple[object, ...], data: bytes) -> None:
        if len(data) > _CAPTIONED_CACHE_BYTES:
            return
        self._captioned[key] = data
        self._captioned_bytes += len(data)
        while self._captioned_bytes > _CAPTIONED_CACHE_BYTES:
            _, dropped = self._captioned.popitem(last=False)
            self._captioned_bytes -= len(dropped)
