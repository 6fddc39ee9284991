"""The public namespace: complete, sorted, documented and owned by the package."""

from __future__ import annotations

import inspect

import nanobanana_async
import nanobanana_async.testing


def _isort_key(name: str) -> tuple[int, str]:
    """Constants first, then classes, then functions and dunders (ruff's RUF022 order)."""
    if name.isupper():
        return 0, name
    if name[0].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted_and_names_only_real_attributes() -> None:
    """__all__ is sorted (constants, classes, the rest) and every name in it exists."""
    names = nanobanana_async.__all__
    assert names == sorted(names, key=_isort_key)
    for name in names:
        assert hasattr(nanobanana_async, name), name


def test_every_public_class_and_function_is_documented_and_claims_the_package() -> None:
    """Reprs and tracebacks say nanobanana_async.X, and each public object has a docstring."""
    for name in nanobanana_async.__all__:
        value = getattr(nanobanana_async, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "nanobanana_async", name
            assert inspect.getdoc(value), name


def test_no_public_class_is_left_out_of_all() -> None:
    """Anything importable without an underscore is either a module or listed in __all__."""
    exported = set(nanobanana_async.__all__)
    for name, value in vars(nanobanana_async).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        assert name in exported, name


def test_design_surface_names_are_exported() -> None:
    """The names the package documents for outside code are all importable from it."""
    promised = {
        "NanoBanana",
        "ImageRequest",
        "Task",
        "TaskStatus",
        "ImageResult",
        "Outcome",
        "AdaptivePolling",
        "FixedPolling",
        "NanoBananaError",
    }
    assert promised <= set(nanobanana_async.__all__)


def test_testing_namespace_is_sorted_and_complete() -> None:
    """The simulator's public names follow the same rules."""
    names = nanobanana_async.testing.__all__
    assert names == sorted(names, key=_isort_key)
    assert {"Simulator", "LatencyProfile", "Respond"} <= set(names)
