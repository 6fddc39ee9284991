"""Prices the user supplies, and the spend they imply: ``--price`` for ``nanobanana run``.

The SDK knows no prices and invents none: the user gives a price per model
(optionally per model and resolution) on the command line or in a TOML
file, and the summary and the dry run turn counts of creates into an
estimate. Creates of a model without a price are counted, never guessed.
"""

from __future__ import annotations

import contextlib
import math
import tomllib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import attrs

from nanobanana_async import MODELS, RESOLUTIONS

__all__ = ["Kind", "PriceTable", "Spend", "kind_label", "money"]

#: What a create is priced by: its model and its resolution (None: not set).
Kind = tuple[str, str | None]

_FORMAT = (
    "give MODEL=PRICE or MODEL:RESOLUTION=PRICE, comma-separated "
    "(e.g. nano-banana-pro=0.12,nano-banana-pro:4k=0.24), or a .toml file of such keys"
)


def kind_label(kind: Kind) -> str:
    """``nano-banana-pro 4k``, or the model alone when no resolution was set."""
    model, resolution = kind
    return model if resolution is None else f"{model} {resolution}"


def money(amount: float) -> str:
    """An amount with two decimals, or up to four when a price has more (0.039)."""
    text = f"{amount:,.4f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')}"


@attrs.frozen
class Spend:
    """An estimate: what the priced creates cost, and how many had no price."""

    total: float
    unpriced: Counter[Kind]

    def unpriced_kinds(self) -> str:
        """The kinds of create that had no price: ``nano-banana-2, nano-banana-pro 4k``."""
        return ", ".join(kind_label(kind) for kind in sorted(self.unpriced, key=_order))


def _order(kind: Kind) -> tuple[str, str]:
    return kind[0], kind[1] or ""


@attrs.frozen
class PriceTable:
    """Prices per model, or per model and resolution (the more specific one wins)."""

    prices: Mapping[Kind, float] = attrs.field(factory=dict)

    def __bool__(self) -> bool:
        return bool(self.prices)

    def price(self, kind: Kind) -> float | None:
        """The price of one create of this kind, or None when the user gave none."""
        found = self.prices.get(kind)
        if found is None and kind[1] is not None:
            found = self.prices.get((kind[0], None))
        return found

    def spend(self, counts: Mapping[Kind, int]) -> Spend:
        """The estimate for ``counts`` creates of each kind."""
        total = 0.0
        unpriced: Counter[Kind] = Counter()
        for kind, count in counts.items():
            price = self.price(kind)
            if price is None:
                unpriced[kind] += count
            else:
                total += price * count
        return Spend(total=total, unpriced=unpriced)

    def merged(self, other: PriceTable) -> PriceTable:
        """This table with ``other``'s prices added (``other`` wins on the same key)."""
        return PriceTable({**self.prices, **other.prices})

    @classmethod
    def parse(cls, text: str) -> PriceTable:
        """``nano-banana-pro=0.12,nano-banana-pro:4k=0.24``; ValueError says what is wrong."""
        prices: dict[Kind, float] = {}
        for item in text.split(","):
            key, equals, value = item.strip().partition("=")
            if not equals:
                raise ValueError(f"{item.strip()!r} has no price: {_FORMAT}")
            prices[_kind(key.strip())] = _amount(key.strip(), value.strip())
        return cls(prices)

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        """A TOML file of ``nano-banana-pro = 0.12`` or ``"nano-banana-pro:4k" = 0.24`` lines."""
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"price file {path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ValueError(f"price file {path} cannot be read: {exc.strerror or exc}") from None
        table = data.get("prices", data)
        if not isinstance(table, dict) or not table:
            raise ValueError(f"price file {path} holds no prices: {_FORMAT}")
        prices: dict[Kind, float] = {}
        for key, value in table.items():
            prices[_kind(key)] = _amount(key, value)
        return cls(prices)


def _kind(key: str) -> Kind:
    model, colon, resolution = key.partition(":")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} in a price; models: {', '.join(MODELS)}")
    if not colon:
        return model, None
    resolution = resolution.lower()
    if resolution not in RESOLUTIONS:
        raise ValueError(
            f"unknown resolution {resolution!r} in the price of {model}; "
            f"resolutions: {', '.join(RESOLUTIONS)}"
        )
    return model, resolution


def _amount(key: str, value: object) -> float:
    amount = math.nan
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            amount = float(value)
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"the price of {key} must be a number, 0 or more, got {value!r}")
    return amount
