"""Running the command line inside a test: its exit status and output, and the one-line error contract."""

from __future__ import annotations

import pytest

from convscope.cli import main


def cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """``convscope ARGS...`` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The bad-input contract: exactly one ``error:`` line on stderr and no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]
