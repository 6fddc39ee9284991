"""The price table behind ``--price``: parsing, the more specific price winning, the estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobanana_async.cli._cost import PriceTable, money


def test_a_price_per_model_and_resolution_beats_the_model_price() -> None:
    table = PriceTable.parse("nano-banana-pro=0.12, nano-banana-pro:4K=0.24")
    assert table.price(("nano-banana-pro", "4k")) == 0.24
    assert table.price(("nano-banana-pro", "2k")) == 0.12
    assert table.price(("nano-banana-pro", None)) == 0.12
    assert table.price(("nano-banana-2", None)) is None


def test_the_estimate_counts_unpriced_creates_instead_of_guessing() -> None:
    table = PriceTable.parse("nano-banana-pro=0.12")
    spend = table.spend({("nano-banana-pro", "1k"): 10, ("nano-banana-2", None): 3})
    assert money(spend.total) == "1.20"
    assert dict(spend.unpriced) == {("nano-banana-2", None): 3}
    assert spend.unpriced_kinds() == "nano-banana-2"


@pytest.mark.parametrize(
    ("amount", "shown"), [(0, "0.00"), (1.2, "1.20"), (0.039, "0.039"), (1234.5, "1,234.50")]
)
def test_money_shows_cents_and_keeps_a_finer_price(amount: float, shown: str) -> None:
    assert money(amount) == shown


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nano-banana-pro", "has no price"),
        ("nano-banana-pro=-1", "0 or more"),
        ("nano-banana-pro=nan", "0 or more"),
        ("banana=1", "unknown model 'banana'"),
    ],
)
def test_a_bad_price_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        PriceTable.parse(text)


def test_a_price_file_is_toml_with_or_without_a_prices_table(tmp_path: Path) -> None:
    flat = tmp_path / "flat.toml"
    flat.write_text('nano-banana = 0.039\n"nano-banana-pro:4k" = 0.24\n', encoding="utf-8")
    nested = tmp_path / "nested.toml"
    nested.write_text("[prices]\nnano-banana = 0.039\n", encoding="utf-8")
    assert PriceTable.load(flat).price(("nano-banana-pro", "4k")) == 0.24
    assert PriceTable.load(nested).price(("nano-banana", None)) == 0.039
    broken = tmp_path / "broken.toml"
    broken.write_text("nano-banana = true\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must be a number"):
        PriceTable.load(broken)
    broken.write_text("nano-banana = \n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid TOML"):
        PriceTable.load(broken)
