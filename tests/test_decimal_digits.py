"""Numbers read from text are checked with str.isdecimal, the digits int() reads: str.isdigit is also true for
superscripts ('²'), which int() refuses, so a check by isdigit let a ValueError traceback through (or a row through)."""

from __future__ import annotations

import pytest
from conftest import load_script

from mnad import distributed
from mnad.errors import ConfigError
from mnad.outputs.detect_writer import _frame_of


def test_a_row_whose_first_field_is_a_superscript_is_no_row() -> None:
    assert _frame_of("12,0.5,1") == 12 and _frame_of("frame,psnr") is None
    assert _frame_of("²,0.5,1") is None  # was: int('²'), a ValueError


def test_a_master_port_of_superscript_digits_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "²")
    with pytest.raises(ConfigError, match="MASTER_PORT='²' must be a port number"):
        distributed.join_store(0, 2)


def test_an_epoch_list_with_a_superscript_is_refused_by_name() -> None:
    epoch_curve = load_script("scripts/epoch_curve.py")
    assert epoch_curve.parse_epochs("10, 2") == [2, 10]
    with pytest.raises(ValueError, match="'²' is not an epoch number"):
        epoch_curve.parse_epochs("10,²")
