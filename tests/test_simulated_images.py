"""The simulator's images show which prompt they answer, and stay real, small and cheap PNGs.

Each served PNG is decoded here with zlib alone (chunk CRCs, one IDAT, filter
bytes), and the ink in its caption band is compared with the glyphs the
prompt's first words should produce, so a wrong layout, a wrong word or a
broken stream all fail.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nanobanana_async.testing import LatencyProfile, Simulator, _png
from nanobanana_async.testing._glyphs import BOX, caption_layout, draw, fit_text, transliterate
from nanobanana_async.testing._png import ImageCache, dimensions

from .helpers import decode_png

DEMO_PROMPTS = Path(__file__).resolve().parent.parent / "examples" / "prompts.txt"

# Drawn again here, independently of the font module, to read letters out of an image.
LETTER_H = ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#")
LETTER_E = ("#####", "#....", "#....", "####.", "#....", "#....", "#####")


def decode(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of a simulated image, which writes every row unfiltered."""
    width, height, rows = decode_png(data)
    assert {row[0] for row in rows} == {0}, "the simulator writes every row unfiltered"
    return width, height, [row[1:] for row in rows]


def band_ink(data: bytes) -> tuple[int, bytes]:
    """Width and the caption band's ink: 1 per dark pixel, 0 per light one (nothing between)."""
    width, height, rows = decode(data)
    layout = caption_layout(width, height)
    assert layout is not None
    ink = bytearray()
    for row in rows[height - layout.band_height :]:
        for x in range(0, len(row), 3):
            darkest, lightest = max(row[x : x + 3]), min(row[x : x + 3])
            assert darkest < 0x40 or lightest >= 0x80, "band pixels are dark text or light tint"
            ink.append(darkest < 0x40)
    return width, bytes(ink)


def expected_ink(width: int, height: int, text: tuple[str, ...]) -> bytes:
    """The ink ``text`` should leave in the band, one byte per pixel."""
    layout = caption_layout(width, height)
    assert layout is not None
    return draw(text, width, layout)[0::3]


def read_letter(ink: bytes, width: int, scale: int, left: int, top: int) -> tuple[str, ...]:
    """The 5x7 font pixels whose top-left image pixel is (left, top), as "#" and "."."""
    return tuple(
        "".join("#" if ink[(top + y * scale) * width + left + x * scale] else "." for x in range(5))
        for y in range(7)
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def image_for(
    session: aiohttp.ClientSession, sim: Simulator, prompt: str, **fields: Any
) -> bytes:
    """Create a task with ``prompt`` on an instant simulator and download its image."""
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    body = {"model": "nano-banana-2", "prompt": prompt, **fields}
    async with session.post(f"{sim.base_url}/v1/banana/images", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        task_id = (await r.json())["id"]
    async with session.get(f"{sim.base_url}/v1/result/{task_id}", headers=headers) as r:
        url = (await r.json())["image_url"]
    async with session.get(url) as r:
        assert r.status == 200
        assert r.content_type == "image/png"
        return await r.read()


async def test_a_served_image_shows_the_first_words_of_its_prompt(
    session: aiohttp.ClientSession,
) -> None:
    """The band's dark pixels are exactly the glyphs of the prompt's first words, wrapped."""
    prompt = "A red fox curled up asleep in fresh snow at dawn"
    async with Simulator(latency=LatencyProfile.instant(), image_long_side=266) as sim:
        data = await image_for(session, sim, prompt)
    width, height, _ = decode(data)
    assert (width, height) == (266, 266)
    text = fit_text(prompt, 21, 2)
    assert text == ("A red fox curled up", "asleep in fresh...")
    _, ink = band_ink(data)
    assert ink == expected_ink(width, height, text)
    assert ink != expected_ink(width, height, fit_text("A red fox curled up on a rug", 21, 2))


async def test_the_letters_read_back_as_hand_drawn_glyphs(session: aiohttp.ClientSession) -> None:
    """Read independently of the font table: the first ink is an H, the next cell an E."""
    async with Simulator(latency=LatencyProfile.instant(), image_long_side=512) as sim:
        data = await image_for(session, sim, "HE said hello", size="4:3")
    width, ink = band_ink(data)
    layout = caption_layout(*dimensions("4:3", 512))
    assert layout is not None
    scale = layout.scale
    assert scale == 4
    top, left = divmod(ink.index(1), width)  # the H's top-left pixel is the first ink
    assert read_letter(ink, width, scale, left, top) == LETTER_H
    assert read_letter(ink, width, scale, left + 6 * scale, top) == LETTER_E


async def test_different_prompts_differ_and_the_same_prompt_gives_the_same_bytes(
    session: aiohttp.ClientSession,
) -> None:
    """Prompts alike in their first words still differ; a prompt's image is reproducible."""
    one = "a red fox in the snow at dawn, watercolour, take 1"
    two = "a red fox in the snow at dawn, watercolour, take 2"
    assert fit_text(one, 20, 2) == fit_text(two, 20, 2)  # the same words show: colours differ
    async with Simulator(latency=LatencyProfile.instant(), image_long_side=128) as sim:
        first = await image_for(session, sim, one)
        again = await image_for(session, sim, one)
        other = await image_for(session, sim, two)
    async with Simulator(latency=LatencyProfile.instant(), image_long_side=128, seed=5) as sim:
        elsewhere = await image_for(session, sim, one)
    assert first == again == elsewhere
    assert first != other


def test_every_demo_prompt_gets_its_own_picture_of_about_the_same_size() -> None:
    """The 22 demo prompts at the command's 512 px: 22 different images, each within 2%."""
    prompts = [
        line
        for line in DEMO_PROMPTS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(prompts) == 22
    cache = ImageCache(512)
    images = [cache.for_prompt("1:1", prompt) for prompt in prompts]
    assert len(set(images)) == 22
    assert len({band_ink(image)[1] for image in images}) == 22
    plain = len(cache.get("1:1", 0))
    assert all(abs(len(image) - plain) < plain * 0.02 for image in images)


def test_only_the_band_differs_from_the_plain_picture() -> None:
    """Above the band, a captioned image is the plain picture of its variant, row for row."""
    cache = ImageCache(200)
    captioned = cache.for_prompt("16:9", "a lighthouse in a storm")
    _, height, rows = decode(captioned)
    band = caption_layout(*dimensions("16:9", 200))
    assert band is not None
    top = height - band.band_height
    matches = [
        variant
        for variant in range(_png.VARIANTS)
        if decode(cache.get("16:9", variant))[2][:top] == rows[:top]
    ]
    assert len(matches) == 1
    assert decode(cache.get("16:9", matches[0]))[2][top:] != rows[top:]


@pytest.mark.parametrize(
    ("prompt", "shown"),
    [
        ("一只红狐狸在雪地里", BOX * 9),
        ("Café crème brûlée, naïve", "Cafe creme brulee,"),
        ("Straße \u201cquoted\u201d \u2014 dash", 'Strasse "quoted" -'),
        ("\U0001f98a fox \u200dwith a lone \ud800 surrogate", BOX + " fox with a lone"),
        ("مرحبا fox", BOX * 5 + " fox"),
    ],
)
async def test_non_ascii_prompts_give_valid_images_drawn_sensibly(
    session: aiohttp.ClientSession, prompt: str, shown: str
) -> None:
    """Accents are dropped, marks spelled in ASCII, other scripts boxed; the PNG stays valid."""
    async with Simulator(latency=LatencyProfile.instant(), image_long_side=128) as sim:
        data = await image_for(session, sim, prompt, size="3:2")
    width, height, _ = decode(data)
    assert (width, height) == dimensions("3:2", 128) == (128, 85)
    layout = caption_layout(width, height)
    assert layout is not None
    text = fit_text(prompt, layout.columns, layout.lines)
    assert text[0] == shown
    assert band_ink(data)[1] == expected_ink(width, height, text)


def test_transliteration_and_wrapping() -> None:
    """Whole words per line, long words cut, "..." when the prompt goes on, nothing left empty."""
    assert transliterate("\ufb01ne \uff21\uff42\uff43\tx\u2026") == "fine Abc x..."
    assert fit_text("one two three four", 9, 2) == ("one two", "three...")
    assert fit_text("one two three", 9, 2) == ("one two", "three")
    assert fit_text("one two, three", 10, 1) == ("one two...",)
    assert fit_text("one two, three", 9, 1) == ("one...",)
    assert fit_text("supercalifragilistic", 8, 2) == ("supercal", "ifrag...")
    assert fit_text("  \u200b  ", 10, 2) == ()
    assert fit_text("x" * 100_000, 10, 1) == ("xxxxxxx...",)


def test_images_too_small_for_a_letter_get_no_band() -> None:
    """Below one character, there is no caption: the layout says so and the image is plain."""
    assert [caption_layout(w, h) for w, h in [(1, 1), (8, 8), (9, 40), (40, 11)]] == [None] * 4
    assert caption_layout(10, 12) is not None
    cache = ImageCache(8)
    image = cache.for_prompt("1:1", "a red fox")
    assert image in {cache.get("1:1", variant) for variant in range(_png.VARIANTS)}
    assert decode(image)[:2] == (8, 8)


async def test_caption_images_off_serves_the_plain_picture_picked_by_task_id(
    session: aiohttp.ClientSession,
) -> None:
    """What the benchmarks use: one of the cached plain pictures, whatever the prompt."""
    async with Simulator(
        latency=LatencyProfile.instant(), image_long_side=96, caption_images=False
    ) as sim:
        data = await image_for(session, sim, "a red fox")
        (task,) = sim.tasks.values()
    cache = ImageCache(96)
    assert data == cache.for_task(task.id, "1:1")
    assert data == cache.get("1:1", zlib.crc32(task.id.encode()))
    assert task.prompt == "a red fox"


def test_captioned_images_are_cached_within_a_byte_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache drops the least recently used images past its budget; a redraw is identical."""
    budget = len(ImageCache(64).for_prompt("1:1", "probe")) * 5 // 2
    monkeypatch.setattr(_png, "_CAPTIONED_CACHE_BYTES", budget)
    cache = ImageCache(64)
    first = cache.for_prompt("1:1", "prompt 0")
    for index in range(1, 10):
        cache.for_prompt("1:1", f"prompt {index}")
        assert cache._captioned_bytes <= budget
    assert cache._captioned_bytes == sum(len(image) for image in cache._captioned.values())
    assert 1 <= len(cache._captioned) <= 3
    assert first not in cache._captioned.values()
    assert cache.for_prompt("1:1", "prompt 0") == first
