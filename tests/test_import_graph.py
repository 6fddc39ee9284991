"""The package's layering, read from the source: who may import whom.

The command line is a user of the public API, so what it needs, users can
have too; the HTTP seam knows nothing of journals, batches or the client;
only the package's front door builds on the client module, and the batch
engine is handed a job function and its limits, never the client.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nanobanana_async"


def imports_of(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (relative imports resolved), TYPE_CHECKING ones included."""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])  # the module's package
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module is None:
                yield from (f"{module}.{alias.name}" for alias in node.names)
            else:
                yield module


def test_the_command_line_imports_only_the_public_package_and_its_testing_kit() -> None:
    """cli/ uses ``nanobanana_async`` and ``nanobanana_async.testing``, never a private module."""
    allowed = {"nanobanana_async", "nanobanana_async.testing"}
    offenders = {
        f"{path.name}: {module}"
        for path in (PACKAGE / "cli").glob("*.py")
        for module in imports_of(path)
        if module.startswith("nanobanana_async")
        and module not in allowed
        and not module.startswith("nanobanana_async.cli")
    }
    assert not offenders, sorted(offenders)


def test_the_http_seam_imports_no_journal_engine_or_client_module() -> None:
    """_http/ is the I/O seam: it never reaches up into what runs jobs or records them."""
    above = (
        "nanobanana_async._client",
        "nanobanana_async._journal",
        "nanobanana_async._sqlite_journal",
        "nanobanana_async._resume",
        "nanobanana_async._scheduler",
        "nanobanana_async._jobs",
        "nanobanana_async._batch",
        "nanobanana_async.cli",
    )
    offenders = {
        f"{path.name}: {module}"
        for path in (PACKAGE / "_http").glob("*.py")
        for module in imports_of(path)
        if module.startswith(above)
    }
    assert not offenders, sorted(offenders)


def test_only_the_package_front_door_imports_the_client_module() -> None:
    """No module but ``__init__`` imports ``_client``, not even under TYPE_CHECKING."""
    offenders = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path != PACKAGE / "__init__.py" and "nanobanana_async._client" in set(imports_of(path))
    }
    assert not offenders, sorted(offenders)


def test_the_batch_engine_knows_no_client_http_or_job_module() -> None:
    """_scheduler runs whatever job function it is handed: it imports none of what jobs do."""
    forbidden = (
        "nanobanana_async._client",
        "nanobanana_async._http",
        "nanobanana_async._jobs",
        "nanobanana_async._batch",
        "nanobanana_async._download",
        "nanobanana_async._retry",
    )
    imported = set(imports_of(PACKAGE / "_scheduler.py")) | set(imports_of(PACKAGE / "_feed.py"))
    assert imported, "the reader found no import at all"
    assert not {module for module in imported if module.startswith(forbidden)}


def test_the_import_reader_resolves_relative_imports() -> None:
    """The checks above would pass vacuously if relative imports were misread."""
    cli_run = set(imports_of(PACKAGE / "cli" / "_run.py"))
    assert "nanobanana_async" in cli_run
    assert "nanobanana_async.cli._inputs" in cli_run
    http_client = set(imports_of(PACKAGE / "_http" / "_client.py"))
    assert "nanobanana_async._errors" in http_client
    assert "nanobanana_async._http._config" in http_client
    front_door = set(imports_of(PACKAGE / "__init__.py"))
    assert "nanobanana_async._client" in front_door
