"""One progress line for long transfers (downloads, archives): rewritten in place on a terminal, else a
line through `log` now and then."""

from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """A transfer's progress line: rewritten in place on a terminal, else sent to `log` at most every
    `every` seconds (a CI log gets a line now and then, not one per chunk)."""

    def __init__(self, log, every: float = 10.0, tty: bool | None = None):
        import sys
        import time

        self.log, self.every = log, every
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.t0 = self.last = time.monotonic()

    def elapsed(self) -> float:
        import time

        return time.monotonic() - self.t0

    def show(self, line: str) -> None:
        import sys
        import time

        if self.tty:
            sys.stdout.write(f"\r  {line}   ")
            sys.stdout.flush()
        elif time.monotonic() - self.last >= self.every:
            self.log(f"  {line}")
            self.last = time.monotonic()

    def end(self, line: str | None = None) -> None:
        """Close the terminal line; `line` is logged either way."""
        import sys

        if self.tty:
            sys.stdout.write("\n")
        if line:
            self.log(f"  {line}")
