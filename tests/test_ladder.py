"""The ladder's verdict per axis, on constructed gaps: narrowing, widening, flat within noise, a reversal through zero,
and points with too few seeds, which are shown but cannot decide."""

import numpy as np
import pytest

from twogrpo.ladder import (
    GapPoint,
    axis_verdict,
    axis_verdicts,
    default_choice,
    gap_rows,
    paper_points,
    rate_choice,
    reference_progress,
    shares_where_learning,
    verdict_table,
    x8_by_rate,
)


def points(*gaps, seeds=3):
    """(gap, standard error) per axis value 1, 2, 3...; 95% interval +-1.96 se (df large), `seeds` seeds each."""
    return [GapPoint(i + 1, gap, gap - 1.96 * se, gap + 1.96 * se, se, 1000.0, seeds, f"p{i + 1}")
            for i, (gap, se) in enumerate(gaps)]


@pytest.mark.parametrize(("gaps", "verdict"), [
    (((-6.0, 0.5), (-3.5, 0.5), (-1.0, 0.5)), "narrows"),  # the deficit shrinks, every point on the line
    (((-2.0, 0.5), (-5.0, 0.5), (-8.0, 0.5)), "widens"),
    (((-4.0, 1.0), (-3.0, 1.0), (-3.5, 1.0)), "no trend shown"),  # flat within noise
    (((-6.0, 3.0), (-1.0, 3.0)), "no trend shown"),  # a 5-point move inside 12-point-wide intervals
    # The order of the arms reverses: the end-point rule read |-4.8| > |+4.0| as "narrows".
    (((-4.8, 0.6), (-0.4, 0.6), (4.0, 0.6)), "reverses"),
    (((-6.0, 0.5), (-3.0, 0.5), (0.5, 0.5)), "narrows"),  # crosses 0, but the far end is not shown apart from it
    (((-4.0, 1.0),), "not judged: fewer than two points with 3+ seeds and an interval"),  # one point: no axis
])
def test_the_verdict_follows_the_slope_through_every_point(gaps, verdict):
    assert axis_verdict(points(*gaps)) == verdict
    assert axis_verdict(list(reversed(points(*gaps)))) == verdict  # the axis values order the points, not the list


def test_a_point_with_few_seeds_cannot_decide_the_verdict():
    flat = points((-4.0, 0.5), (-4.2, 0.5))
    one_seed = GapPoint(3, 3.0, 2.0, 4.0, 0.5, 1000.0, 1, "size-10m")  # far off the line, narrow, 1 seed
    assert axis_verdict([*flat, one_seed]) == "no trend shown"
    assert axis_verdict([flat[0], one_seed]) == ("not judged: fewer than two points with 3+ seeds and an interval "
                                                 "(seeds size-10m: 1)")
    no_interval = GapPoint(3, 3.0, float("nan"), float("nan"), float("nan"), float("nan"), 3, "old")
    assert axis_verdict([flat[0], no_interval]).endswith("(no interval: old)")
    assert axis_verdict(points((-6.0, 0.5), (-1.0, 0.5), seeds=2)).startswith("not judged")


def test_a_multiplicative_axis_is_read_on_its_scale():
    # Gaps linear in log10(parameters) lie on a line there: the residual scatter does not widen the slope.
    sized = [GapPoint(10.0 ** e, g, g - 1, g + 1, 0.5, 1000.0, 3) for e, g in ((5, -6.0), (6, -4.0), (7, -2.0))]
    assert axis_verdict(sized, np.log10) == "narrows"


def ladder_point(parameters, epochs, gaps, seeds=3):
    """A ladder point as tools/ladder.py records it: g16 at lr 1e-4 and `seeds` runs per 2-GRPO arm; gaps: arm ->
    (lr factor, gap in points, half-width of its 95% interval)."""
    summary = [{"arm": "g16", "seed": str(s), "lr": "0.0001", "mean_at_k": "0.5", "dead_group_frac": "0.25",
                "rollouts": "16384", "train_time": "50.0"} for s in range(seeds)]
    arms = {}
    for arm, (factor, gap, half) in gaps.items():
        summary += [{"arm": arm, "seed": str(s), "lr": str(1e-4 * factor), "mean_at_k": str(0.5 + gap / 100),
                     "dead_group_frac": "0.75", "rollouts": "2048", "train_time": "6.0"} for s in range(seeds)]
        share = 1 + gap / 10  # 16-GRPO gains 10 points over the base
        arms[arm] = {"accuracy_gap": gap / 100, "accuracy_gap_low": (gap - half) / 100,
                     "accuracy_gap_high": (gap + half) / 100, "accuracy_gap_se": half / 196,
                     "accuracy_gap_df": 1000.0, "share": share, "share_low": share - half / 10,
                     "share_high": share + half / 10, "share_se": half / 19.6, "share_df": 1000.0,
                     "share_lower_bound": share - half / 12}
    train = {"epochs": epochs, "prompts": 1024, "arms": {"g16": {"group_size": 16}} | {
        arm: {"group_size": 2, **({"prompts_per_minibatch": 8} if arm == "g2-updates" else {})} for arm in gaps}}
    return {"claims": {"reference_arm": "g16", "arms": arms}, "summary": summary,
            "base": {"parameters": parameters}, "params": {"train": train}}


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
    by_size = axis_verdicts(rows, "parameters").set_index("arm")
    assert by_size["verdict"].to_dict() == {"g2-same-lr": "narrows", "g2": "no trend shown"}
    assert by_size["verdict on the share"].to_dict() == {"g2-same-lr": "narrows", "g2": "no trend shown"}
    by_rule = axis_verdicts(rows, "lr_factor", by="point").set_index("point")["verdict"]
    assert set(by_rule) == {"widens"}  # x8 is farther from zero than x1 at every point
    # Every axis is listed; one none of whose points has run reads "not judged".
    table = verdict_table(rows, {"model size": ["center", "size-10m"], "training length": ["epochs-4-prompts-256"]})
    assert set(table.loc[table["axis"] == "model size", "arm"]) == {"g2-same-lr", "g2"}
    assert table.loc[table["axis"] == "training length", "verdict"].tolist() == [
        "not judged: none of its points has run"]
    assert set(table.loc[table["axis"].str.startswith("learning-rate"), "arm"]) == {
        "2-GRPO at center", "2-GRPO at size-2m", "2-GRPO at size-10m"}
    # A probe varies something else at one rate: it is no point of the rate axis.
    ladder["points"]["probe"] = ladder_point(600_000, 1, {"g2": (8, -20.0, 3.0), "g2-rs": (8, -6.0, 3.0)})
    table = verdict_table(gap_rows(ladder), {"model size": ["center", "size-10m"]})
    assert "2-GRPO at probe" not in set(table["arm"])
    del ladder["points"]["probe"]
    # A share without bounds (16-GRPO's gain not shown there) is not fitted: two points left, within noise.
    unbounded = ladder["points"]["size-10m"]["claims"]["arms"]["g2-same-lr"]
    unbounded["share_low"], unbounded["share_high"] = float("-inf"), float("inf")
    by_size = axis_verdicts(gap_rows(ladder), "parameters").set_index("arm")
    assert by_size.loc["g2-same-lr", "verdict"] == "narrows"
    assert by_size.loc["g2-same-lr", "verdict on the share"] == "no trend shown"

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
    # Table 4's row "2" (32 prompts x 2 at 16-GRPO's rate) has 16-GRPO's update count: it sits beside g2-updates,
    # not beside the ladder's x1 arm, which makes 8 times fewer updates.
    assert set(table4.loc[table4["lr_factor"] == 1.0, "arm"]) == {"g2-updates"}
    assert set(points.loc[points["lr_factor"] == 8.0, "arm"]) == {"g2"}


def test_every_ladder_point_composes_to_valid_params_changing_only_its_factors():
    """Each point of conf/ladder/ composes (as `dvc exp run -S ladder=<point>` composes it) into params that validate,
    with the ladder's arms, and differ from the embedded default only in the arms, the center's keys and the point's
    own; the report's axes name points that exist."""
    from tests.fixtures import changed
    from tools.ladder import AXES, CENTER, changes, ladder_points, overrides, settings
    from tools.setups import compose

    assert ladder_points()[0] == CENTER and {p for axis in AXES.values() for p in axis} <= set(ladder_points())
    default, _ = compose([])
    for point in ladder_points():
        mapping, params = compose(overrides(point, []))
        arms = params.train.arms
        grid = point.startswith("grid-lr-")  # the learning-rate grid: 16-GRPO, 2-GRPO at x1 and x8
        sgd = point == "probe-x8-sgd"  # 2-GRPO by SGD at the update size of the collapsed AdamW arm
        probe = point.startswith("probe-") and not sgd  # the x8 collapse's probe: 2-GRPO and 2-GRPO+RS at x8
        # Each 2-GRPO arm's rate over 16-GRPO's (elsewhere the grid's choice, x4); g2-updates is checked below.
        factors = ({"g2": 8, "g2-same-lr": 1} if grid else {"g2": 8, "g2-rs": 8} if probe
                   else {"g2-sgd": 17_800} if sgd else {"g2": 8, "g2-tuned": 4})
        assert set(arms) == {"g16", *factors} | (set() if grid or probe or sgd else {"g2-updates"}), point
        reference = params.train.reference_lr
        assert {a: params.train.lr(arms[a]) / reference for a in factors} == pytest.approx(factors)
        assert {a for a, arm in arms.items() if arm.optimizer == "sgd"} == ({"g2-sgd"} if sgd else set()), point
        if probe:
            assert arms["g2-rs"].resample and not arms["g2"].resample
        elif not grid and not sgd:  # 2-GRPO with 16-GRPO's updates: as many prompts per mini-batch, at its rate
            assert params.train.lr(arms["g2-updates"]) == reference
            assert params.train.prompts_per_minibatch(arms["g2-updates"]) == \
                params.train.prompts_per_minibatch(arms["g16"]) == 8
        expected = changed(default, {"train": {"arms": mapping["train"]["arms"]}})
        for key, value in (settings(CENTER) | changes(point)).items():
            section, name = key.split(".")
            expected[section][name] = value
        assert mapping == expected, point
        assert point == CENTER or changes(point), point  # every other point changes something


def test_a_recorded_run_of_a_redefined_point_is_told_apart():
    """The report keeps a point's recorded run only while the point's file still describes it."""
    from tools.ladder import outdated
    from tools.setups import compose

    mapping, _ = compose(["ladder=size-10m"])
    assert outdated("size-10m", mapping) == {}
    mapping["train"]["reference_lr"], mapping["base"]["hidden_size"] = 1e-4, 128  # the point as it once ran
    assert outdated("size-10m", mapping) == {"train.reference_lr": (3.125e-6, 1e-4), "base.hidden_size": (512, 128)}
    smoke, _ = compose(["ladder=size-10m", "train.prompts=256"])  # a run with a --set value is not the point...
    assert outdated("size-10m", smoke) == {"train.prompts": (1024, 256)}
    assert outdated("size-10m", smoke, ["train.prompts=256", "scale=dry-run"]) == {}  # ...unless asked with the same


def test_a_bad_override_stops_the_ladder_before_anything_is_queued():
    from tools.ladder import check_points

    with pytest.raises(SystemExit, match=r"ladder-center: train.epochs=-1 must be >= 1"):
        check_points(["center", "epochs-4-prompts-256"], ["train.epochs=-1"])
    with pytest.raises(SystemExit, match=r"ladder-center: .*train.epoch"):
        check_points(["center"], ["train.epoch=4"])


def grid_ladder(validation: dict[float, tuple[float, float, float]], seeds: int = 3) -> tuple[dict, list[str]]:
    """Grid points as tools/ladder.py records them: reference rate -> validation Mean@k (%) of 16-GRPO, 2-GRPO at
    x1 and 2-GRPO at x8."""
    points = {}
    for rate, (g16, x1, x8) in validation.items():
        point = ladder_point(600_000, 10, {"g2-same-lr": (1, -1.0, 2.0), "g2": (8, -5.0, 2.0)}, seeds=seeds)
        for run in point["summary"]:
            run["lr"] = str(float(run["lr"]) / 1e-4 * rate)
        point["claims"]["validation"] = {"g16": {"mean": g16 / 100}, "g2-same-lr": {"mean": x1 / 100},
                                         "g2": {"mean": x8 / 100}}
        points[f"grid-lr-{rate:g}"] = point
    return {"points": points}, list(points)


def test_each_arm_takes_the_lowest_rate_within_a_point_of_its_own_best_on_validation():
    ladder, grid = grid_ladder({1.25e-5: (40.0, 30.0, 44.0), 2.5e-5: (45.0, 35.0, 44.5), 5e-5: (45.5, 40.0, 20.0),
                                1e-4: (43.0, 44.8, 5.0)})
    table, rates = rate_choice(gap_rows(ladder), grid)
    assert len(table) == 12 and set(table["arm"]) == {"16-GRPO", "2-GRPO"}
    # 16-GRPO: best 45.5 at 5e-5, and 45.0 at 2.5e-5 is within a point: the lower rate. 2-GRPO: best 44.8 (x1 of
    # 1e-4), with 44.5 (x8 of 2.5e-5, i.e. 2e-4) and 44.0 (x8 of 1.25e-5, 1e-4) within a point: 1e-4.
    assert rates["16-GRPO"] == pytest.approx(2.5e-5) and rates["2-GRPO"] == pytest.approx(1e-4)
    assert rates["2-GRPO by the paper's rule"] == pytest.approx(2e-4)
    x8 = x8_by_rate(gap_rows(ladder), grid)  # the paper's rule at each reference rate, by rate
    assert x8["lr"].tolist() == pytest.approx([1e-4, 2e-4, 4e-4, 8e-4])
    assert x8["validation"].tolist() == pytest.approx([44.0, 44.5, 20.0, 5.0])


def test_no_rate_is_chosen_before_every_grid_point_has_three_seeds():
    ladder, grid = grid_ladder({1e-4: (43.0, 44.8, 5.0), 5e-5: (45.5, 40.0, 20.0)}, seeds=2)
    assert rate_choice(gap_rows(ladder), grid)[1] is None
    ladder, grid = grid_ladder({1e-4: (43.0, 44.8, 5.0)})
    assert rate_choice(gap_rows(ladder), [*grid, "grid-lr-5e-05"])[1] is None  # a grid point has not run


def curve_rows(accuracies: list[list[float]], arm: str = "g16") -> list[dict]:
    """In-training evaluations per seed (generation steps 0, 1, ...), as a point's curve rows."""
    return [{"arm": arm, "seed": str(seed), "gen_step": str(step), "eval_accuracy": str(a)}
            for seed, run in enumerate(accuracies) for step, a in enumerate(run)]


def test_the_default_is_the_candidate_where_16_grpo_still_improves_with_the_most_epochs():
    rising = curve_rows([[0.30, 0.34, 0.36, 0.38, 0.40, 0.42], [0.30, 0.33, 0.36, 0.39, 0.41, 0.43],
                         [0.31, 0.34, 0.37, 0.38, 0.41, 0.44]])
    flat = curve_rows([[0.30, 0.45, 0.46, 0.45, 0.46, 0.45], [0.30, 0.44, 0.45, 0.46, 0.45, 0.46],
                       [0.31, 0.45, 0.45, 0.45, 0.46, 0.45]])
    progress = reference_progress(rising)
    assert progress["slope"] == pytest.approx(2.0, abs=0.5) and progress["slope_low"] > 0
    assert progress["gain"] == pytest.approx((12 + 13 + 13) / 3) and progress["gain_low"] > 0
    assert reference_progress(flat)["slope_low"] < 0 < reference_progress(flat)["gain_low"]

    def ladder_of(curves: dict[str, list[dict]]) -> dict:
        points = {}
        for point, rows in curves.items():
            record = ladder_point(600_000, 10 if "epochs-10" in point else 1, {"g2": (8, -5.0, 2.0)})
            record["claims"]["validation"] = {"g16": {"mean": 0.45 if rows is flat else 0.43}}
            points[point] = record | {"curves": rows}
        return {"points": points}

    ladder = ladder_of({"center": rising, "epochs-10-prompts-128": flat})
    table, chosen = default_choice(ladder, gap_rows(ladder), ["center", "epochs-10-prompts-128"])
    assert chosen == "center" and list(table["still improving"]) == [True, False]  # the only one still improving
    # Each share beside whether 16-GRPO still learns at its point: those points first.
    shares = shares_where_learning(ladder, gap_rows(ladder))
    assert shares[["point", "arm", "still improving"]].values.tolist() == [
        ["center", "g2", True], ["epochs-10-prompts-128", "g2", False]]
    assert shares["share"].tolist() == pytest.approx([0.5, 0.5])  # a 5-point gap of a 10-point gain
    ladder = ladder_of({"center": flat, "epochs-10-prompts-128": flat})
    assert default_choice(ladder, gap_rows(ladder), ["center", "epochs-10-prompts-128"])[1] == "center"  # tie: first
    ladder = ladder_of({"center": rising, "epochs-10-prompts-128": rising})
    assert default_choice(ladder, gap_rows(ladder), ["center", "epochs-10-prompts-128"])[1] == \
        "epochs-10-prompts-128"  # both improve: the most epochs
    assert default_choice(ladder, gap_rows(ladder), ["center", "size-2m"])[1] is None  # a candidate has not run


def test_a_queue_worker_that_stops_with_points_queued_is_started_again_then_given_up_on(monkeypatch, capsys):
    """DVC's queue worker can stop with experiments still queued (treeverse/dvc#10562): after a minute of ours queued
    and none running the ladder starts a worker again, and gives up, naming the points, after MAX_RESTARTS."""
    from tools import ladder

    starts = []
    monkeypatch.setattr(ladder, "POLL_SECONDS", 0)
    monkeypatch.setattr(ladder, "start_worker", lambda: starts.append(1))
    # Queued with no worker for four polls, then running once started again, then done.
    answers = iter([({"ladder-a"}, False)] * 4 + [({"ladder-a"}, True), (set(), False)])
    monkeypatch.setattr(ladder, "pending", lambda names: next(answers))
    ladder.wait_for({"ladder-a"}, start=0.0)
    assert len(starts) == 1 and "starting it again" in capsys.readouterr().out

    starts.clear()
    monkeypatch.setattr(ladder, "pending", lambda names: ({"ladder-a", "ladder-b"}, False))  # never runs
    with pytest.raises(SystemExit, match="ladder-a, ladder-b wait, after 3 restarts"):
        ladder.wait_for({"ladder-a", "ladder-b"}, start=0.0)
    assert len(starts) == ladder.MAX_RESTARTS == 3
