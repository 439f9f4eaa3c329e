"""errors.printable runs inside the CLI's error and warning handlers: it must show any text and never raise, or a
one-line error becomes a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mnad import cli
from mnad.errors import DataError, printable


@pytest.mark.parametrize(("text", "shown"), [
    ("plain é", "plain é"),
    ("name\udcff.avi", "name\\xff.avi"),  # a byte of a name that is not UTF-8 (surrogateescape)
    ("\udcc3\udca9", "é"),  # bytes that are UTF-8 together
    (Path("p\udcfe"), "p\\xfe"),
    (b"q\xff", "q\\xff"),
    ("x\ud800y", "x\\ud800y"),  # a lone surrogate from JSON ("\ud800"): no encoding holds it
    ("\udfff\udc7f\udd00 and \udcff", "\\udfff\\udc7f\\udd00 and \\xff"),
])
def test_printable_shows_any_text_and_never_raises(text: str | Path | bytes, shown: str) -> None:
    assert printable(text) == shown
    printable(text).encode("utf-8")  # what a terminal or JSON reader takes


def test_cli_error_and_warning_with_a_lone_surrogate_are_one_line_each(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def command(args: object) -> None:
        logging.getLogger("mnad.test").warning("%s: skipped", "a\ud800b")
        raise DataError("video/\ud800.avi: cannot open video")

    monkeypatch.setattr(cli, "cmd_recipes", command)
    assert cli.main(["recipes"]) == 2
    err = capsys.readouterr().err
    assert err == "mnad: warning: a\\ud800b: skipped\nmnad: error: video/\\ud800.avi: cannot open video\n"
