"""The ladder: how 2-GRPO's gap to 16-GRPO moves along one axis (model size, training length, learning-rate rule),
judged by the gap's bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass

VERDICTS = ("narrows", "widens", "no trend shown")


@dataclass(frozen=True)
class GapPoint:
    """The accuracy gap (2-GRPO minus 16-GRPO, points) at one value of an axis, with its 95% interval."""

    value: float  # the axis value: parameters, epochs, the learning-rate factor
    gap: float
    low: float
    high: float


def axis_verdict(points: list[GapPoint]) -> str:
    """"narrows" or "widens" when the gap's intervals at the axis' two ends do not overlap and the gap is nearer zero
    (narrows) or farther from it (widens) at the larger end; "no trend shown" when they overlap, or with fewer than
    two points. Only the ends are judged: a middle point shows the path, not the verdict."""
    if len(points) < 2:
        return "no trend shown"
    first, last = min(points, key=lambda p: p.value), max(points, key=lambda p: p.value)
    if first.high >= last.low and last.high >= first.low:  # the intervals overlap: within noise
        return "no trend shown"
    return "narrows" if abs(last.gap) < abs(first.gap) else "widens"
