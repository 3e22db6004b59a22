"""Deterministic child names: short names unchanged, long ones cut, unique, and (where asked) suffixed."""

from __future__ import annotations

import hashlib
import re

import pytest

from kubetune_api import labels

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _digest(full: str) -> str:
    return hashlib.sha256(full.encode()).hexdigest()[:8]


LONG = "a" * 70
EXACT = "b" * 55  # + "-trainer" = 63 characters: still fits
ONE_OVER = "c" * 56  # + "-trainer" = 64 characters
DASH_AT_CUT = "d" * 45 + "-" + "e" * 20  # the cut lands right after the '-'
DOT_AT_CUT = "f" * 45 + "." + "g" * 20  # FineTuneJob names are DNS subdomains


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        ("demo", "demo-trainer"),
        (EXACT, f"{EXACT}-trainer"),
        (ONE_OVER, f"{'c' * 46}-{_digest(ONE_OVER + '-trainer')}-trainer"),
        (LONG, f"{'a' * 46}-{_digest(LONG + '-trainer')}-trainer"),
        (DASH_AT_CUT, f"{'d' * 45}-{_digest(DASH_AT_CUT + '-trainer')}-trainer"),
        (DOT_AT_CUT, f"{'f' * 45}-{_digest(DOT_AT_CUT + '-trainer')}-trainer"),
    ],
)
def test_suffixed_child_name_keeps_the_suffix(owner: str, expected: str) -> None:
    name = labels.suffixed_child_name(owner, labels.TRAINER_SERVICE_ACCOUNT_SUFFIX)
    assert name == expected
    assert len(name) <= labels.MAX_NAME_LENGTH
    assert name.endswith("-trainer")
    assert DNS_LABEL.match(name), name


def test_suffixed_child_names_of_long_owners_differ_by_hash() -> None:
    first, second = ("x" * 80 + "-one", "x" * 80 + "-two")
    names = {labels.suffixed_child_name(o, "trainer") for o in (first, second)}
    assert len(names) == 2
    assert all(n.startswith("x" * 46 + "-") and n.endswith("-trainer") for n in names)


def test_suffixed_child_name_agrees_with_child_name_when_it_fits() -> None:
    for owner in ("demo", EXACT, "cpt-g3-0123abcd"):
        assert labels.suffixed_child_name(owner, "trainer") == labels.child_name(owner, "trainer")
    # child_name drops the suffix of a long name; the suffixed variant never does.
    assert not labels.child_name(LONG, "trainer").endswith("-trainer")


@pytest.mark.parametrize(
    ("suffix", "max_length", "message"),
    [("", 63, "needs a suffix"), ("trainer", 17, "leaves no room")],
)
def test_suffixed_child_name_refuses_impossible_requests(suffix: str, max_length: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        labels.suffixed_child_name(LONG, suffix, max_length=max_length)
