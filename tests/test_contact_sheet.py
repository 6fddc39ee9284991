"""``DIR/index.html``, the contact sheet: one static page naming every image of a run.

The installed ``nanobanana run --simulate`` writes it; the page is parsed
with the standard library's HTML parser and held against the folder (one
image file per saved input, each named by the page) and the manifest. The
page builder is also fed hand-made rows: hostile prompts are text, never
markup, and every file name becomes a URL that leads back to the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import url2pathname

import pytest

from nanobanana_async.cli import _contact_sheet as contact_sheet
from nanobanana_async.cli._contact_sheet import MAX_TEXT_CARDS, write_contact_sheet

from .test_cli import RUN_TIMEOUT, clean_env, read_manifest
from .test_crash import cli_command

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
HOSTILE = "a <script>alert(\"boo\")</script> & 'quotes' </p><img src=x onerror=alert(1)>"
PROMPTS = [
    "a calm lake at noon",
    HOSTILE,
    "a forbidden picture [fail]",
    "日本の桜 at dusk",
    "лиса в снегу",
]
#: Elements with no end tag: never on the parser's stack.
VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            yield from child.walk()

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


class Page(HTMLParser):
    """The page as a small tree of elements (``root``), read with ``html.parser``."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self._stack = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self._stack[-1].children.append(element)
        if tag not in VOID:
            self._stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert self._stack[-1].tag == tag, f"</{tag}> closes <{self._stack[-1].tag}>"
        self._stack.pop()

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(Element("#text", {}, data))

    def elements(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        return [
            node
            for node in self.root.walk()
            if (tag is None or node.tag == tag) and (cls is None or cls in node.classes)
        ]

    def image_sources(self) -> list[str]:
        return [node.attrs["src"] for node in self.elements("img")]

    def card_of(self, prompt: str) -> Element:
        """The one card whose prompt paragraph reads exactly ``prompt``."""
        found = [
            card
            for card in self.elements(cls="card")
            if any(p.all_text() == prompt for p in card.walk() if "prompt" in p.classes)
        ]
        assert len(found) == 1, (prompt, len(found))
        return found[0]

    def summary(self) -> dict[str, int]:
        """The summary's counts: ``{"inputs": 5, "saved": 4, ...}``."""
        counts: dict[str, int] = {}
        for item in self.elements("li"):
            (number,) = [node.all_text() for node in item.walk() if node.tag == "b"]
            counts[item.all_text().removesuffix(number)] = int(number)
        return counts


def read_page(out: Path) -> Page:
    return Page((out / "index.html").read_text(encoding="utf-8"))


def top_level_images(out: Path) -> set[str]:
    return {path.name for path in out.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES}


def file_of(out: Path, src: str) -> Path:
    """The local file a browser opens for ``src`` on ``out/index.html``."""
    url = urljoin((out / "index.html").as_uri(), src)
    parts = urlsplit(url)
    assert parts.scheme == "file", url
    return Path(url2pathname(parts.path))


def assert_static_and_offline(page: Page) -> None:
    """No script, no event handler, no javascript: URL, nothing fetched from another origin."""
    assert not page.elements("script")
    assert not page.elements("link")
    for node in page.root.walk():
        for name, value in node.attrs.items():
            assert not name.startswith("on"), (node.tag, name)
            assert not value.lower().startswith(("javascript:", "http:", "https:", "//")), value
    style = "".join(node.all_text() for node in page.elements("style"))
    assert "url(" not in style
    assert "@import" not in style


def nanobanana(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``nanobanana`` with ``args``, run in ``cwd``."""
    return subprocess.run(
        [*cli_command(), *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """One ``run --simulate`` of PROMPTS into ``out`` given relative to the working directory."""
    folder = tmp_path_factory.mktemp("contact-sheet")
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    result = nanobanana(
        folder, "run", "prompts.txt", "--out", "out", "--simulate", "--simulate-latency", "fast"
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result.returncode, folder / "out"


def test_a_run_names_every_image_in_its_folder_and_nothing_else(
    simulated_run: tuple[int, Path],
) -> None:
    """Image sources and the folder's top-level images are the same set, one per saved row."""
    returncode, out = simulated_run
    assert returncode == 1  # the [fail] prompt
    page = read_page(out)
    sources = page.image_sources()
    assert len(sources) == len(set(sources))
    on_page = {unquote(src) for src in sources}
    assert on_page == top_level_images(out)
    for src in sources:
        assert file_of(out, src).parent == out
        assert file_of(out, src).is_file()
    saved = [row for row in read_manifest(out) if row["status"] == "saved"]
    assert len(saved) == 4
    assert top_level_images(out) == {Path(row["path"]).name for row in saved}
    visible = {node.all_text() for node in page.elements(cls="file")}
    assert visible == on_page  # each file is named in the card's text too
    files = {path.name for path in out.iterdir() if not path.name.startswith(".")}
    assert files == top_level_images(out) | {"index.html", "manifest.jsonl"}
    assert not [path for path in out.iterdir() if path.is_dir()]


def test_a_failed_input_shows_its_status_and_reason_and_the_summary_links_to_it(
    simulated_run: tuple[int, Path],
) -> None:
    _returncode, out = simulated_run
    page = read_page(out)
    card = page.card_of("a forbidden picture [fail]")
    assert "failed" in card.classes
    assert not [node for node in card.walk() if node.tag == "img"]
    text = card.all_text()
    assert "TaskFailedError" in text
    assert "Content policy violation" in text
    assert "line3" in text.replace(" ", "")
    assert page.summary() == {"inputs": 5, "saved": 4, "failed": 1}
    ids = {node.attrs["id"] for node in page.root.walk() if "id" in node.attrs}
    anchors = {node.attrs["href"] for node in page.elements("a") if "#" in node.attrs["href"]}
    assert anchors == {"#images", "#problems"}
    assert {anchor[1:] for anchor in anchors} <= ids


def test_html_in_a_prompt_is_shown_as_text_and_the_page_has_no_script(
    simulated_run: tuple[int, Path],
) -> None:
    _returncode, out = simulated_run
    page = read_page(out)
    assert_static_and_offline(page)
    card = page.card_of(HOSTILE)  # the exact text came back out of the parser
    assert len([node for node in card.walk() if node.tag == "img"]) == 1
    assert len(page.elements("img")) == 4


def test_a_non_ascii_prompt_gets_a_percent_encoded_source_that_names_its_file(
    simulated_run: tuple[int, Path],
) -> None:
    _returncode, out = simulated_run
    page = read_page(out)
    for prompt in ("日本の桜 at dusk", "лиса в снегу"):
        card = page.card_of(prompt)
        (image,) = [node for node in card.walk() if node.tag == "img"]
        src = image.attrs["src"]
        assert src.isascii()
        assert file_of(out, src).is_file()
        assert not unquote(src).isascii()


def test_a_rerun_after_max_images_rebuilds_the_sheet_from_the_journal(tmp_path: Path) -> None:
    """--max-images 1 leaves two inputs not attempted; the rerun's page shows all three saved."""
    prompts = ["a red fox", "a blue whale", "a green heron"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    argv = ["run", "prompts.txt", "--out", "out", "--simulate", "--simulate-latency", "fast"]

    first = nanobanana(tmp_path, *argv, "--max-images", "1")
    assert first.returncode == 3, first.stdout + first.stderr
    out = tmp_path / "out"
    page = read_page(out)
    assert page.summary() == {"inputs": 3, "saved": 1, "not attempted": 2}
    assert {unquote(src) for src in page.image_sources()} == top_level_images(out)
    waiting = [card for card in page.elements(cls="card") if "not_attempted" in card.classes]
    assert len(waiting) == 2
    assert all("run the same command again" in card.all_text() for card in waiting)

    second = nanobanana(tmp_path, *argv)
    assert second.returncode == 0, second.stdout + second.stderr
    page = read_page(out)
    assert page.summary() == {"inputs": 3, "saved": 3}
    assert {unquote(src) for src in page.image_sources()} == top_level_images(out)
    assert len(top_level_images(out)) == 3
    for prompt in prompts:
        assert [node for node in page.card_of(prompt).walk() if node.tag == "img"]
    assert not page.elements(cls="not_attempted")


def row(index: int, prompt: str, status: str = "saved", **fields: Any) -> dict[str, Any]:
    """A manifest row as ``manifest_rows`` yields it."""
    base: dict[str, Any] = {
        "index": index,
        "line": index + 1,
        "prompt": prompt,
        "model": "nano-banana-2",
        "resolution": None,
        "size": None,
        "task_id": None,
        "status": status,
        "path": None,
        "error": None,
        "error_type": None,
    }
    base.update(fields)
    return base


def test_hand_made_rows_are_escaped_everywhere_they_appear(tmp_path: Path) -> None:
    """Markup and quotes in prompt, settings, reason and file name come back as the same text."""
    evil = "\"><script>alert(1)</script><b title='x'>&amp;"
    image = tmp_path / "x.png"
    image.write_bytes(b"not really a png")
    rows = [
        row(0, evil, model=evil, resolution=evil, size=evil, path=str(image)),
        row(1, evil, "failed", error=evil, error_type="TaskFailedError"),
        row(2, evil, evil),  # an unknown status is a problem card, its name escaped
    ]
    write_contact_sheet(tmp_path, rows)
    page = read_page(tmp_path)
    assert_static_and_offline(page)
    assert all(node.all_text().isdigit() for node in page.elements("b"))  # the summary's
    prompts = [node.all_text() for node in page.elements(cls="prompt")]
    assert sorted(prompts) == [evil] * 3
    settings = [node.all_text() for node in page.elements("dd")]
    assert settings.count(evil) == 3
    reasons = [node.all_text() for node in page.elements(cls="reason")]
    assert f"TaskFailedError: {evil}" in reasons
    assert page.summary()[evil] == 1


def test_file_names_with_unicode_spaces_and_url_characters_lead_back_to_their_file(
    tmp_path: Path,
) -> None:
    names = [
        "日本の桜-528bafec72640160.png",
        "with space & ampersand.png",
        "hash#and?query%20.png",
        "colon:looks-like-a-scheme.png",
        "quote\"and'apostrophe.png",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"image")
    write_contact_sheet(
        tmp_path, [row(i, name, path=str(tmp_path / name)) for i, name in enumerate(names)]
    )
    page = read_page(tmp_path)
    sources = page.image_sources()
    assert [unquote(src) for src in sources] == names
    assert [file_of(tmp_path, src) for src in sources] == [tmp_path / name for name in names]
    assert all(src.isascii() and "#" not in src and "?" not in src for src in sources)


def test_an_image_outside_the_folder_is_linked_by_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An absolute path elsewhere, and a path relative to the working directory, both resolve."""
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere" / "ça va.png"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"image")
    inside = out / "here.png"
    inside.write_bytes(b"image")
    monkeypatch.chdir(tmp_path)
    rows = [row(0, "far", path=str(elsewhere)), row(1, "near", path="out/here.png")]
    write_contact_sheet(out, rows)
    sources = read_page(out).image_sources()
    assert sources == ["../elsewhere/%C3%A7a%20va.png", "here.png"]
    assert [file_of(out, src) for src in sources] == [elsewhere, inside]


def test_writing_leaves_only_index_html_and_replaces_it_whole(tmp_path: Path) -> None:
    write_contact_sheet(tmp_path, [row(0, "first", "pending")])
    first = (tmp_path / "index.html").read_text(encoding="utf-8")
    write_contact_sheet(tmp_path, [row(0, "second", "failed", error="no")])
    assert os.listdir(tmp_path) == ["index.html"]
    second = read_page(tmp_path)
    assert "first" in first
    assert second.summary() == {"inputs": 1, "failed": 1}
    assert second.card_of("second")


def test_text_cards_are_capped_per_section_and_the_rest_counted(tmp_path: Path) -> None:
    extra = 7
    rows = [row(i, f"p{i}", "not_attempted") for i in range(MAX_TEXT_CARDS + extra)]
    write_contact_sheet(tmp_path, rows)
    page = read_page(tmp_path)
    assert len(page.elements(cls="card")) == MAX_TEXT_CARDS
    assert page.summary()["not attempted"] == MAX_TEXT_CARDS + extra
    (more,) = page.elements(cls="more")[1:]
    assert f"and {extra} more" in more.all_text()


def ten_thousand_rows(folder: Path, count: int = 10_000) -> list[dict[str, Any]]:
    """Mostly saved rows, one in ten failed, with realistic prompts and file names."""
    return [
        row(
            i,
            f"a red fox number {i} in the snow, watercolour",
            "saved" if i % 10 else "failed",
            path=str(folder / f"a-red-fox-number-{i}-{i:016x}.png") if i % 10 else None,
            error=None if i % 10 else "Content policy violation: the prompt was rejected",
            error_type=None if i % 10 else "TaskFailedError",
            resolution="2k",
            size="16:9",
        )
        for i in range(count)
    ]


def test_ten_thousand_rows_make_one_page_naming_every_image(tmp_path: Path) -> None:
    rows = ten_thousand_rows(tmp_path)
    write_contact_sheet(tmp_path, rows)  # about 0.13 s; timings belong to benchmarks/
    page = read_page(tmp_path)
    assert len(page.image_sources()) == 9_000
    assert page.summary() == {"inputs": 10_000, "saved": 9_000, "failed": 1_000}


def test_rows_are_streamed_so_memory_stays_flat_for_a_large_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 rows make a page of about 11 MB; building it holds a bounded part of that.

    Image cards are kept in memory up to a threshold (8 MiB), here lowered to
    1 MiB so that a page of a test's size spills to the anonymous temp file.
    """
    if sys.gettrace() is not None:
        pytest.skip("under a tracer (coverage) the allocations measured are the tracer's too")
    monkeypatch.setattr(contact_sheet, "_SPOOL_BYTES", 1 << 20)
    rows = ten_thousand_rows(tmp_path, 20_000)
    tracemalloc.start()
    try:
        write_contact_sheet(tmp_path, iter(rows))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = (tmp_path / "index.html").stat().st_size
    assert size > 10_000_000
    assert peak < size / 4, (peak, size)  # about 1.2 MB held for an 11 MB page
