"""Every Python example of the README and the docs runs, as written, against the simulator.

The blocks are read from the Markdown when the tests are collected (nothing
is copied here), so an example that stops working fails a test named after
its file and line. Each block runs in a fresh temporary folder, in its own
``python -X dev -W error`` process bounded by a timeout, with
``NANOBANANA_BASE_URL`` and ``NANOBANANA_API_KEY`` pointing at a simulator
on 127.0.0.1, just as a user's script would find them. The folder holds a
small ``prompts.txt`` for the examples that read one.

Only fences whose language is ``python`` (or ``py``) run. An HTML comment on
the line before a fence (blank lines between are allowed) changes how it runs:

- ``<!-- example: skip (why) -->``: not run; the reason is required and shown.
- ``<!-- example: continue -->``: joined to the block before it in the same
  file (a fragment that uses its names); the two run as one program.
- ``<!-- example: pytest -->``: the block is a test module; it runs under
  ``python -m pytest`` (the package's pytest plugin provides its fixtures).

An HTML comment right after a fence that starts with ``<!-- example: then``
holds code appended to the block when it runs, unseen by the reader: it
calls what the block only defines (a function that takes a client, say).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import nanobanana_async
import nanobanana_async.testing

from .test_cli import simulator_process

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
#: Seconds one example may take (a default client polls first 2 s after a create).
EXAMPLE_TIMEOUT = 60
#: The key the examples' simulator accepts, handed to them through the environment.
EXAMPLE_KEY = "sk-docs-examples"
PROMPTS = """\
# One prompt a line; blank lines and lines starting with '#' are skipped.
A red fox curled up asleep in fresh snow at dawn
A lighthouse on a cliff during a thunderstorm

A bowl of ramen with steam rising, top-down food photography
"""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<what>.*?)\s*-->\s*$")
_THEN = re.compile(r"^\s*<!--\s*example:\s*then\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>[^)]*\S[^)]*)\)$")
_RUNNABLE = frozenset({"python", "py"})


@attrs.frozen
class Block:
    """One fenced block of Markdown."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str | None  # the text of the `<!-- example: ... -->` before it
    then: str  # hidden code from a `<!-- example: then ... -->` after it


@attrs.frozen
class Example:
    """What one test runs: a block, with any blocks that continue it."""

    blocks: tuple[Block, ...]
    mode: str  # "script", "pytest" or "skip"
    reason: str = ""

    @property
    def id(self) -> str:
        first = self.blocks[0]
        return f"{first.path.relative_to(REPO_ROOT).as_posix()}:{first.line}"

    @property
    def source(self) -> str:
        return "\n\n".join(
            part for block in self.blocks for part in (block.code, block.then) if part
        )


def markdown_files() -> list[Path]:
    """The README and every page under docs/, in a stable order."""
    return [REPO_ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _marker_before(lines: list[str], index: int) -> str | None:
    """The `example:` marker on the nearest non-blank line before ``lines[index]``, if any."""
    for back in range(index - 1, -1, -1):
        if lines[back].strip():
            match = _MARKER.match(lines[back])
            return match["what"] if match else None
    return None


def _hidden_after(lines: list[str], index: int) -> str:
    """The code of an `<!-- example: then ... -->` comment starting after ``lines[index]``."""
    start = index + 1
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start >= len(lines) or not _THEN.match(lines[start]):
        return ""
    for end in range(start + 1, len(lines)):
        if lines[end].strip() == "-->":
            return textwrap.dedent("\n".join(lines[start + 1 : end])).strip("\n") + "\n"
    raise ValueError(f"unclosed '<!-- example: then' comment at line {start + 1}")


def fenced_blocks(path: Path) -> Iterator[Block]:
    """Every fenced block of one Markdown file, its code dedented to the fence's indent."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        language = info.split()[0].lower() if info else ""
        body: list[str] = []
        close = index + 1
        while close < len(lines):
            line = lines[close]
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                break
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            close += 1
        else:
            raise ValueError(f"{path}:{index + 1}: unclosed code fence")
        yield Block(
            path=path,
            line=index + 1,
            language=language,
            code="\n".join(body).strip("\n") + "\n",
            marker=_marker_before(lines, index),
            then=_hidden_after(lines, close),
        )
        index = close + 1


def examples(path: Path) -> list[Example]:
    """The runnable examples of one file: python blocks, joined and marked as the file says."""
    found: list[Example] = []
    for block in fenced_blocks(path):
        if block.language not in _RUNNABLE:
            continue
        marker = block.marker
        if marker is None:
            found.append(Example((block,), "script"))
        elif marker == "continue":
            if not found:
                raise ValueError(f"{path}:{block.line}: 'continue' with no python block before")
            previous = found.pop()
            found.append(attrs.evolve(previous, blocks=(*previous.blocks, block)))
        elif marker == "pytest":
            found.append(Example((block,), "pytest"))
        elif (skip := _SKIP.match(marker)) is not None:
            found.append(Example((block,), "skip", reason=skip["reason"].strip()))
        else:
            raise ValueError(
                f"{path}:{block.line}: unknown marker <!-- example: {marker} --> (expected "
                "'skip (reason)', 'continue' or 'pytest')"
            )
    return found


def all_examples() -> list[Example]:
    return [example for path in markdown_files() for example in examples(path)]


def _clean_env() -> dict[str, str]:
    """This environment without the SDK's variables, proxies or terminal hints."""
    dropped = {"COLUMNS", "LINES", "FORCE_COLOR", "PYTHONWARNINGS"}
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NANOBANANA_") and key not in dropped and "proxy" not in key.lower()
    }


@pytest.fixture(scope="module")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A standalone simulator (fast jobs) on 127.0.0.1 for every example; yields its base URL."""
    workdir = tmp_path_factory.mktemp("docs-simulator")
    with simulator_process(workdir, EXAMPLE_KEY, latency="fast") as base_url:
        yield base_url


def _run(example: Example, workdir: Path, base_url: str) -> subprocess.CompletedProcess[str]:
    """Run ``example`` in ``workdir`` as a user would, with the key and URL in the environment."""
    (workdir / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    env = _clean_env()
    env.update({"NANOBANANA_BASE_URL": base_url, "NANOBANANA_API_KEY": EXAMPLE_KEY})
    python = [sys.executable, "-X", "dev", "-W", "error"]
    if example.mode == "pytest":
        script = workdir / "test_example.py"
        argv = [*python, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    else:
        script = workdir / "example.py"
        argv = [*python, script.name]
    script.write_text(example.source, encoding="utf-8")
    return subprocess.run(
        argv,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )


_EXAMPLES = all_examples()


@pytest.mark.parametrize("example", _EXAMPLES, ids=[example.id for example in _EXAMPLES])
def test_example_runs(example: Example, simulator_url: str, tmp_path: Path) -> None:
    """The block runs to completion against the simulator, with no warning or ignored error."""
    if example.mode == "skip":
        pytest.skip(f"marked in the Markdown: {example.reason}")
    result = _run(example, tmp_path, simulator_url)
    report = "\n".join(
        ("--- source", example.source, "--- stdout", result.stdout, "--- stderr", result.stderr)
    )
    assert result.returncode == 0, report
    assert "Traceback" not in result.stderr, report
    assert "Exception ignored" not in result.stderr, report
    assert EXAMPLE_KEY not in result.stdout + result.stderr, report


def test_examples_are_found() -> None:
    """The README's examples are among those run, so a parsing slip cannot empty the suite."""
    readme = [example for example in _EXAMPLES if example.id.startswith("README.md:")]
    assert len(readme) >= 2
    assert all(example.mode != "skip" for example in readme)


def test_markers_are_understood(tmp_path: Path) -> None:
    """Skips need a reason, fragments join the block before, hidden code is appended."""
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent(
            """\
            ```python
            x = 1
            ```
            <!-- example: then
            print(x)
            -->

            <!-- example: continue -->
            ```py
            y = x + 1
            ```

            <!-- example: skip (needs a web server) -->
            ```python
            serve()
            ```

            - a list item:

                ```python
                z = 3
                ```

            ```bash
            nanobanana run prompts.txt
            ```
            """
        ),
        encoding="utf-8",
    )
    first, skipped, indented = examples(page)
    assert [block.line for block in first.blocks] == [1, 9]
    assert first.source == "x = 1\n\n\nprint(x)\n\n\ny = x + 1\n"
    assert (skipped.mode, skipped.reason) == ("skip", "needs a web server")
    assert indented.source == "z = 3\n"

    page.write_text("<!-- example: skip -->\n```python\npass\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown marker"):
        examples(page)


def _reference_targets() -> set[str]:
    """Every ``::: dotted.name`` that docs/reference.md asks mkdocstrings to render."""
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    return set(re.findall(r"^:::\s*([\w.]+)\s*$", text, flags=re.MULTILINE))


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("nanobanana_async", nanobanana_async.__all__),
        ("nanobanana_async.testing", nanobanana_async.testing.__all__),
    ],
)
def test_reference_renders_every_public_name(module: str, names: list[str]) -> None:
    """Each name of ``__all__`` is rendered in the API reference, so none can be left out."""
    targets = _reference_targets()
    missing = [name for name in names if f"{module}.{name}" not in targets]
    assert not missing, f"add to docs/reference.md: {', '.join(missing)}"
