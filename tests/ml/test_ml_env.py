"""cogkit.ml.env: the one parser of the predictors' environment switches."""

from __future__ import annotations

import pytest

from cogkit.ml.env import env_flag, env_int


@pytest.mark.parametrize("value,want", [("1", True), ("true", True), (" YES ", True), ("On", True),
                                        ("0", False), ("false", False), ("No", False), ("off ", False)])
def test_flag_values(monkeypatch, value, want):
    monkeypatch.setenv("COGKIT_TEST_FLAG", value)
    assert env_flag("COGKIT_TEST_FLAG") is want
    assert env_flag("COGKIT_TEST_FLAG", default=not want) is want


def test_flag_unset_or_empty_is_the_default(monkeypatch):
    monkeypatch.delenv("COGKIT_TEST_FLAG", raising=False)
    assert env_flag("COGKIT_TEST_FLAG") is None
    assert env_flag("COGKIT_TEST_FLAG", default=True) is True
    monkeypatch.setenv("COGKIT_TEST_FLAG", "  ")
    assert env_flag("COGKIT_TEST_FLAG", default=False) is False


def test_flag_typo_names_the_variable(monkeypatch):
    monkeypatch.setenv("COGKIT_TEST_FLAG", "maybe")
    with pytest.raises(ValueError, match="COGKIT_TEST_FLAG: expected 1/true/yes/on or 0/false/no/off, got 'maybe'"):
        env_flag("COGKIT_TEST_FLAG", default=True)


def test_int(monkeypatch):
    monkeypatch.delenv("COGKIT_TEST_INT", raising=False)
    assert env_int("COGKIT_TEST_INT") is None and env_int("COGKIT_TEST_INT", 16) == 16
    monkeypatch.setenv("COGKIT_TEST_INT", " 42 ")
    assert env_int("COGKIT_TEST_INT", 16) == 42
    monkeypatch.setenv("COGKIT_TEST_INT", "4k")
    with pytest.raises(ValueError, match="COGKIT_TEST_INT: must be an integer, got '4k'"):
        env_int("COGKIT_TEST_INT", 16)
