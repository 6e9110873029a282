"""The gates' figures, printed at the end of the run with how much of its bound each uses.

Issue 12 asks every gate to sit at most at 90% of its bound; the terminal summary shows
the margin of each gate measured in this run, so a fresh-clone run's output is the record.
For an upper bound the share is figure ÷ bound; for a lower bound (the Cython router must
be at least 4x its reference model) it is bound ÷ figure; a bound of 0 (no allocation) is
met only by 0 and shows as 0% or as "over".
"""
from __future__ import annotations

import pytest

FIGURES: list[tuple[str, float, float, str]] = []


def share(figure: float, bound: float, kind: str) -> float:
    """How much of its bound a figure uses (1.0 = exactly at the bound)."""
    if kind == ">=":
        return bound / figure if figure > 0 else float("inf")
    if bound == 0:
        return 0.0 if figure == 0 else float("inf")
    return figure / bound


@pytest.fixture
def gate_figure():
    """record(name, figure, bound, kind="<=") for the terminal summary's gate table."""
    def record(name: str, figure: float, bound: float, kind: str = "<=") -> None:
        FIGURES.append((name, float(figure), float(bound), kind))
    return record


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.section("gate figures")
    for name, figure, bound, kind in FIGURES:
        used = share(figure, bound, kind)
        shown = "over" if used == float("inf") else f"{used:.0%} of the bound"
        terminalreporter.write_line(f"{name}: {figure:.3f} {kind} {bound:g} ({shown})")
