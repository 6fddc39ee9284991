"""Real PNG bytes for the simulated file host.

The images are valid RGB PNGs (signature, IHDR, one zlib IDAT, IEND) so an SDK
can check magic bytes and trailers exactly as it would on the real service. The
pixels are a gradient with low-order noise: the noise keeps the file close to a
photo's size (about 60% of ``width * height * 3`` bytes) instead of the few
hundred bytes a flat gradient compresses to, so download benchmarks move
realistic amounts of data. Encoded images are cached per (width, height,
variant), so serving one costs a dictionary lookup.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Final

from .._vocabulary import SIZES

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: How many differently coloured images exist per size; a task id picks one.
VARIANTS: Final = 8
_NOISE_MASK: Final = 0x1F


def dimensions(size: str, long_side: int) -> tuple[int, int]:
    """Width and height of an image with aspect ratio ``size`` ("16:9") and this long side."""
    across, down = (int(part) for part in size.split(":", 1))
    if across >= down:
        return long_side, max(1, round(long_side * down / across))
    return max(1, round(long_side * across / down)), long_side


def _chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def encode_rgb(width: int, height: int, pixels: bytes) -> bytes:
    """Encode ``height`` rows of ``width`` RGB pixels (8 bits per channel) as a PNG."""
    stride = width * 3
    if len(pixels) != stride * height:
        raise ValueError("pixel data does not match width * height * 3")
    scanlines = b"".join(
        b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(scanlines, 6)),
            _chunk(b"IEND", b""),
        )
    )


def render(width: int, height: int, variant: int) -> bytes:
    """RGB pixels of a seeded gradient: red across, green down, blue diagonal, plus noise."""
    rng = random.Random(variant)
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


class ImageCache:
    """Encoded PNGs by aspect ratio and variant, rendered on first use at one long side."""

    def __init__(self, long_side: int) -> None:
        if not 1 <= long_side <= 16384:
            raise ValueError("image_long_side must be between 1 and 16384 pixels")
        self.long_side = long_side
        self._cache: dict[tuple[str, int], bytes] = {}

    def get(self, size: str, variant: int) -> bytes:
        """The PNG for aspect ratio ``size`` (one of SIZES; others fall back to 1:1)."""
        key = (size if size in SIZES else "1:1", variant % VARIANTS)
        data = self._cache.get(key)
        if data is None:
            width, height = dimensions(key[0], self.long_side)
            data = encode_rgb(width, height, render(width, height, key[1]))
            self._cache[key] = data
        return data

    def for_task(self, task_id: str, size: str) -> bytes:
        """The PNG served for one task: its size, and a variant picked by its id."""
        return self.get(size, zlib.crc32(task_id.encode()))
