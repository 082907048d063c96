"""Plain-text tables and number formatting shared by the benchmark scripts."""

import math
import sys


def table(title: str, headers: list[str], rows: list[list], notes: list[str] = ()) -> None:
    """Print a plain-text table with right-aligned columns (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))
    for n in notes:
        print(f"  {n}")
    sys.stdout.flush()


def fmt(x: float | None, digits: int = 3) -> str:
    """x with `digits` significant digits (— for missing or non-finite)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    return f"{x:.{max(0, digits - 1 - mag)}f}"

