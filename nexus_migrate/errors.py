"""How a failure is told to the operator: one line, password masked, a
non-zero exit, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from urllib.parse import unquote, urlsplit


class OperatorError(Exception):
    """A problem the operator can fix; str() is the one line to show."""


def mask_password(text: str, url: str | None = None) -> str:
    """text with the password of url (by default DATABASE_URL) replaced by ***,
    as written in the URL and as decoded from it."""
    url = os.environ.get("DATABASE_URL", "") if url is None else url
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for form in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(form, "***")
    return text


def one_line_when_uncaught() -> None:
    """An OperatorError that reaches the top of a program that is not ours
    (plain yoyo, which shows any failure with its traceback) is shown as the
    one line run_cli shows; Python then exits with 1. Any other exception keeps
    its traceback."""
    previous = sys.excepthook
    if getattr(previous, "one_line", False):
        return

    def hook(kind, exc, traceback) -> None:
        if issubclass(kind, OperatorError):
            print(f"error: {mask_password(str(exc))}", file=sys.stderr)
        else:
            previous(kind, exc, traceback)

    hook.one_line = True
    sys.excepthook = hook


def run_cli(main: Callable[[list[str]], int | None]) -> None:
    """Run a command's main(argv) and exit with its code; a failure becomes one
    line on stderr (password masked) and a non-zero exit, never a traceback."""
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    except OperatorError as exc:
        print(f"error: {mask_password(str(exc))}", file=sys.stderr)
        code = 2
    except Exception as exc:  # anything else still gets one line, not a trace
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: {mask_password(first_line)}", file=sys.stderr)
        code = 1
    sys.exit(code or 0)
