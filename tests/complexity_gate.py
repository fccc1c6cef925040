"""The complexity gate: no function or method of the package above radon's cyclomatic complexity 15.

ruff's C901 (McCabe) does not count boolean operators and comprehensions' conditions; radon does, and its
count is closer to what a reader has to hold in mind. Run `python -m tests.complexity_gate` (make lint does).
"""

from __future__ import annotations

import sys
from pathlib import Path

from radon.complexity import cc_visit

PKG = Path(__file__).resolve().parents[1] / "chiquito_or_not"
MAX_CC = 15


def over_the_gate(limit: int = MAX_CC) -> list[str]:
    """'file:line name (cc)' for every function or method of the package above `limit`, worst first."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        for block in cc_visit(path.read_text(encoding="utf-8")):
            for b in [block, *getattr(block, "methods", [])]:
                if b.complexity > limit and not hasattr(b, "methods"):
                    found.append(
                        (b.complexity, f"{path.relative_to(PKG.parent)}:{b.lineno} {b.fullname} ({b.complexity})")
                    )
    return [line for _, line in sorted(found, reverse=True)]


def main() -> int:
    bad = over_the_gate()
    for line in bad:
        print(line)
    if bad:
        print(f"{len(bad)} function(s) above radon CC {MAX_CC}: split them into named steps", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
