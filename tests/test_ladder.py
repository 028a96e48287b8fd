"""The ladder's verdict per axis, on constructed gaps: a trend that narrows, one that widens, one flat within noise."""

import pytest

from twogrpo.ladder import GapPoint, axis_verdict


def points(*gaps):
    """(gap, half-width) per axis value 1, 2, 3..."""
    return [GapPoint(i + 1, gap, gap - half, gap + half) for i, (gap, half) in enumerate(gaps)]


@pytest.mark.parametrize(("gaps", "verdict"), [
    (((-6.0, 2.0), (-3.5, 2.0), (-1.0, 2.0)), "narrows"),  # the deficit shrinks beyond the intervals
    (((-6.0, 2.0), (-1.0, 2.0), (2.0, 1.5)), "narrows"),  # and may cross zero
    (((-2.0, 1.0), (-5.0, 1.0), (-8.0, 2.0)), "widens"),
    (((-4.0, 2.0), (-3.0, 2.0), (-3.5, 2.0)), "no trend shown"),  # flat within noise
    (((-6.0, 3.0), (-1.0, 3.0)), "no trend shown"),  # a 5-point move inside 6-point-wide intervals
    (((-4.0, 1.0),), "no trend shown"),  # one point is no axis
])
def test_the_verdict_judges_the_ends_of_the_axis_by_their_intervals(gaps, verdict):
    assert axis_verdict(points(*gaps)) == verdict
    assert axis_verdict(list(reversed(points(*gaps)))) == verdict  # the axis values order the points, not the list
