"""Developer sessions: tests, lint, typecheck, docs and bench (``nox -s NAME``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"

PYTHON = ["3.11"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on loopback, load, soak and crash tests at full size (CI runs them small).

    Branch coverage is measured (in the console scripts and workers the tests
    start too) and reported in the terminal; the whole suite must reach the
    floor in pyproject.toml ([tool.coverage.report] fail_under). A run of some
    tests only (``nox -s tests -- tests/test_x.py``) reports without the floor.
    """
    session.install("-e", ".[test]", "coverage[toml]>=7.10.4")
    data = Path(session.create_tmp()).resolve() / "coverage"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    env = {"NANOBANANA_FULL_LOAD": "1", "COVERAGE_DATA_DIR": str(data)}
    try:
        session.run(
            "python",
            "-X",
            "dev",
            "-m",
            "coverage",
            "run",
            "-m",
            "pytest",
            *session.posargs,
            env=env,
        )
    finally:
        session.run("python", "-m", "coverage", "combine", "-q", env=env)
        floor = ["--fail-under=0"] if session.posargs else []
        session.run("python", "-m", "coverage", "report", *floor, env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    session.install("-e", ".[test]")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ (git-ignored); any warning fails the build."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        *session.posargs,
        # Quiets mkdocs-material's banner about its successor; real warnings still fail.
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against the raw aiohttp baseline (quick profile; ``-- --full`` for 10,000 jobs).

    Prints one table of absolute figures and SDK/baseline ratios and writes it
    to benchmarks/results/latest.json; see benchmarks/README.md.
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/run.py", *session.posargs)
