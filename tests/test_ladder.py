"""The ladder's verdict per axis, on constructed gaps: a trend that narrows, one that widens, one flat within noise."""

import pytest
import yaml

from twogrpo.ladder import GapPoint, axis_verdict, axis_verdicts, gap_rows, paper_points


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


def ladder_point(parameters, epochs, gaps):
    """A ladder point as tools/ladder.py records it: g16 at lr 1e-4 and one run per 2-GRPO arm; gaps: arm -> (lr
    factor, gap in points, half-width)."""
    summary = [{"arm": "g16", "seed": "0", "lr": "0.0001", "mean_at_k": "0.5", "dead_group_frac": "0.25",
                "rollouts": "16384", "train_time": "50.0"}]
    arms = {}
    for arm, (factor, gap, half) in gaps.items():
        summary.append({"arm": arm, "seed": "0", "lr": str(1e-4 * factor), "mean_at_k": str(0.5 + gap / 100),
                        "dead_group_frac": "0.75", "rollouts": "2048", "train_time": "6.0"})
        arms[arm] = {"accuracy_gap": gap / 100, "accuracy_gap_low": (gap - half) / 100,
                     "accuracy_gap_high": (gap + half) / 100}
    return {"claims": {"reference_arm": "g16", "arms": arms}, "summary": summary,
            "base": {"parameters": parameters}, "params": {"train": {"epochs": epochs}}}


def test_gap_rows_and_verdicts_per_axis_from_recorded_points():
    ladder = {"points": {
        "center": ladder_point(600_000, 1, {"g2-same-lr": (1, -5.0, 2.0), "g2": (8, -20.0, 3.0)}),
        "size-2m": ladder_point(2_400_000, 1, {"g2-same-lr": (1, -3.0, 2.0), "g2": (8, -21.0, 3.0)}),
        "size-10m": ladder_point(9_500_000, 1, {"g2-same-lr": (1, -0.5, 2.0), "g2": (8, -19.0, 3.0)}),
        "failed": {"claims": None, "summary": None},
    }}
    rows = gap_rows(ladder)
    assert set(rows["point"]) == {"center", "size-2m", "size-10m"}  # the failed point gives no row
    default = rows[(rows["point"] == "center")].set_index("arm")
    assert default.loc["g2", "lr_factor"] == pytest.approx(8) and default.loc["g2-same-lr", "lr_factor"] == 1
    assert default.loc["g2", "gap"] == pytest.approx(-20.0) and default.loc["g2", "discard_rate"] == 0.75
    by_size = axis_verdicts(rows, "parameters").set_index("arm")["verdict"]
    assert by_size.to_dict() == {"g2-same-lr": "narrows", "g2": "no trend shown"}
    by_rule = axis_verdicts(rows, "lr_factor", by="point").set_index("point")["verdict"]
    assert set(by_rule) == {"widens"}  # x8 is farther from zero than x1 at every point

    # A base that stopped below its target accuracy: the axis through it is not judged.
    ladder["points"]["size-2m"]["base"]["reached_target"] = False
    rows = gap_rows(ladder)
    by_size = axis_verdicts(rows, "parameters").set_index("arm")["verdict"]
    assert set(by_size) == {"not judged: the base of size-2m is below its target"}
    by_rule = axis_verdicts(rows, "lr_factor", by="point", across_bases=False).set_index("point")["verdict"]
    assert by_rule["size-2m"] == "widens"  # the arms of one point share its base


def test_paper_points_place_table_1_and_table_4_on_the_axes():
    import pandas as pd
    points = paper_points(pd.read_csv("data/paper/tables.csv"))
    table1 = points[points["source"] == "v2 Table 1"]
    assert len(table1) == 5 and set(table1["parameters"]) == {1.5e9, 7e9}
    assert table1["gap"].mean() == pytest.approx(-1.04, abs=0.005)  # the paper's claim: mean gap of its 5 runs
    table4 = points[points["source"] == "v3 Table 4"]
    assert sorted(table4["lr_factor"].unique()) == [1.0, 8.0] and len(table4) == 8


def test_every_ladder_point_composes_to_valid_params_changing_only_its_factors():
    """Each point's -S overrides compose (as DVC composes them) into params that validate, with the ladder's arms,
    and differ from the embedded default only in the arms, the center's keys and the point's own."""
    from tests.fixtures import changed
    from tools.ladder import CENTER, POINTS, overrides
    from tools.setups import compose

    default, _ = compose([])
    for point, changes in POINTS.items():
        mapping, params = compose(overrides(point, []))
        arms = params.train.arms
        assert set(arms) == {"g16", "g2", "g2-sqrt", "g2-same-lr"}
        reference = params.train.reference_lr
        assert [params.train.lr(arms[a]) / reference for a in ("g2-same-lr", "g2-sqrt", "g2")] == \
            pytest.approx([1, 8 ** 0.5, 8])
        expected = changed(default, {"train": {"arms": mapping["train"]["arms"]}})
        for key, value in (CENTER | changes).items():
            section, name = key.split(".")
            expected[section][name] = yaml.safe_load(value)
        assert mapping == expected, point


def test_a_bad_override_stops_the_ladder_before_anything_is_queued():
    from tools.ladder import check_points

    with pytest.raises(SystemExit, match=r"ladder-center: train.epochs=-1 must be >= 1"):
        check_points(["center", "epochs-4"], ["train.epochs=-1"])
    with pytest.raises(SystemExit, match=r"ladder-center: .*train.epoch"):
        check_points(["center"], ["train.epoch=4"])
