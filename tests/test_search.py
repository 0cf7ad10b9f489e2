"""Unit tests of the coarse-to-fine search logic (expt.search), with synthetic objectives."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Callable, Mapping, Optional

import pytest

from expt.search import (
    AT_LEAST_ONE,
    COMPLETED,
    DIVERGED,
    FAILED,
    POSITIVE,
    PRUNED,
    ChoiceParam,
    CoarseToFineSearch,
    Condition,
    Limits,
    NumericParam,
    Pinpoint,
    Round,
    SearchConfigError,
    Settings,
    Stage,
    TrialRecord,
    append_record,
    chosen_and_tied,
    consecutive_runs,
    merge_overrides,
    ranked,
    read_records,
    sample_space,
)
from expt.search.report import leader_rows, trial_table

Objective = Callable[[Mapping[str, object]], Optional[float]]


def lr_param(low: float = 1e-6, high: float = 1e-1) -> NumericParam:
    return NumericParam("optimizer.lr", low, high, log=True, limits=POSITIVE)


def settings(*trials: int, top_k: int = 3, **kwargs: object) -> Settings:
    rounds = tuple(Round(n, top_k, (f"trainer.epochs={i + 1}",)) for i, n in enumerate(trials))
    return Settings(stages=(Stage("search", None, rounds),), **kwargs)  # type: ignore[arg-type]


def run(search: CoarseToFineSearch, objective: Objective) -> CoarseToFineSearch:
    """Drive every round with a synthetic objective (None marks a diverged trial)."""
    for stage in search.round_numbers():
        records = []
        for spec in search.propose(stage):
            value = objective(spec.values)
            records.append(TrialRecord(spec.round, spec.job, list(spec.overrides), spec.values,
                                       value, COMPLETED if value is not None else DIVERGED, 0.0))
        search.conclude(stage, records)
    return search


def log_distance(lr: float, target: float) -> float:
    return abs(math.log10(lr) - math.log10(target))


def peak_at(lr_star: float, dropout_star: float = 0.3) -> Objective:
    def objective(values: Mapping[str, object]) -> float:
        value = -log_distance(float(values["optimizer.lr"]), lr_star) ** 2
        if "regularization.dropout" in values:
            value -= 10 * (float(values["regularization.dropout"]) - dropout_star) ** 2
        return value

    return objective


# ---- sampling -----------------------------------------------------------------------------


def test_same_seed_gives_same_trials_and_another_seed_does_not() -> None:
    space = {"optimizer.lr": lr_param(), "activation": ChoiceParam("activation", ("relu", "gelu"))}

    def trials(seed: int) -> list[tuple[str, ...]]:
        return [s.overrides for s in CoarseToFineSearch(space, settings(8, seed=seed)).propose(1)]

    assert trials(3) == trials(3)
    assert trials(3) != trials(4)


def test_log_params_are_log_uniform_and_ints_stay_on_their_grid() -> None:
    rng = random.Random(0)
    lrs = [float(v["lr"]) for v in sample_space({"lr": NumericParam("lr", 1e-6, 1e-2, log=True)}, 4000, rng)]
    per_decade = [sum(10 ** -d <= x < 10 ** -(d - 1) for x in lrs) for d in (6, 5, 4, 3)]
    assert all(800 < n < 1200 for n in per_decade), per_decade
    width = NumericParam("model.hidden_dim", 32, 511, integer=True, limits=AT_LEAST_ONE)
    values = [width.sample(rng) for _ in range(500)]
    assert all(isinstance(v, int) and 32 <= v <= 511 for v in values)
    stepped = NumericParam("n", 8, 64, integer=True, step=8.0)
    assert {stepped.sample(rng) for _ in range(300)} == {8, 16, 24, 32, 40, 48, 56, 64}


def test_trial_overrides_merge_fixed_round_and_sampled_values() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(2),
                                fixed_overrides=["trainer.batch_size=64", "trainer.epochs=7"])
    spec = search.propose(1)[0]
    assert spec.overrides[0] == "trainer.batch_size=64"
    assert "trainer.epochs=1" in spec.overrides and "trainer.epochs=7" not in spec.overrides
    assert spec.overrides[-1] == f"optimizer.lr={spec.values['optimizer.lr']!r}"
    assert merge_overrides(["a=1", "b=2"], ["+a=3"]) == ("b=2", "+a=3")


# ---- narrowing and edge moves -------------------------------------------------------------


def test_ranges_narrow_toward_a_known_optimum() -> None:
    space = {"optimizer.lr": lr_param(),
             "regularization.dropout": NumericParam("regularization.dropout", 0.0, 0.7,
                                                    limits=Limits.parse("[0, 1)"))}
    search = run(CoarseToFineSearch(space, settings(30, 15, 10, 10, seed=1)), peak_at(3e-3))
    lr, dropout = search.space["optimizer.lr"], search.space["regularization.dropout"]
    assert isinstance(lr, NumericParam) and isinstance(dropout, NumericParam)
    assert lr.low <= 3e-3 <= lr.high and lr.width_t < math.log(1e5) / 3
    assert dropout.low <= 0.3 <= dropout.high and dropout.high - dropout.low < 0.7 / 2
    best = search.best()
    assert best is not None and log_distance(float(best.values["optimizer.lr"]), 3e-3) < 0.3
    widths = [h.space["optimizer.lr"]["high"] / h.space["optimizer.lr"]["low"] for h in search.history]
    assert widths == sorted(widths, reverse=True)


def test_an_optimum_outside_the_initial_range_is_reached_by_edge_moves() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param(1e-6, 1e-4)},
                                settings(8, 8, 8, 8, 8, 8, 8, edge=0.15, max_edge_moves=5))
    run(search, peak_at(1e-2))
    assert search.moves and all(m.side == "upper" for m in search.moves)
    assert re.fullmatch(r"best optimizer\.lr=\S+ is at the upper edge of \[\S+, \S+\]: "
                        r"moving the range up to \[\S+, \S+\]", search.moves[0].message())
    best = search.best()
    assert best is not None and log_distance(float(best.values["optimizer.lr"]), 1e-2) < 0.5


def test_a_best_value_in_the_outer_tenth_moves_the_range_past_that_edge() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(3, 3, 3))
    specs = search.propose(1)
    rates = [8.7e-2, 1e-3, 1e-5]
    search.conclude(1, [TrialRecord(1, s.job, [f"optimizer.lr={lr}"], {"optimizer.lr": lr},
                                    -i, COMPLETED, 0.0) for i, (s, lr) in enumerate(zip(specs, rates))])
    (move,) = search.moves
    assert move.message().startswith(
        "best optimizer.lr=8.7e-2 is at the upper edge of [1e-6, 1e-1]: moving the range up to")
    lr = search.space["optimizer.lr"]
    assert isinstance(lr, NumericParam) and lr.low < 8.7e-2 < 1e-1 < lr.high
    assert lr.width_t == pytest.approx(math.log(1e5), rel=1e-3)


def test_edge_moves_are_bounded() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param(1e-6, 1e-5)},
                                settings(6, 6, 6, 6, 6, 6, 6, max_edge_moves=1))
    run(search, peak_at(1.0))
    assert len(search.moves) == 1
    assert search.summary()["edge_moves"][0]["param"] == "optimizer.lr"


@pytest.mark.parametrize("param, sign, inside", [
    (NumericParam("regularization.dropout", 0.5, 0.95, limits=Limits.parse("[0, 1)")), 1.0,
     lambda x: 0 <= x < 1),
    (NumericParam("model.hidden_dim", 2, 12, integer=True, limits=AT_LEAST_ONE), -1.0,
     lambda x: x >= 1 and x == int(x)),
    (NumericParam("optimizer.lr", 1e-300, 1e-290, log=True, limits=POSITIVE), -1.0, lambda x: x > 0),
])
def test_hard_limits_hold_when_the_optimum_lies_beyond_them(
        param: NumericParam, sign: float, inside: Callable[[float], bool]) -> None:
    seen: list[float] = []

    def objective(values: Mapping[str, object]) -> float:
        seen.append(float(values[param.name]))  # type: ignore[arg-type]
        return sign * seen[-1]

    search = run(CoarseToFineSearch({param.name: param}, settings(8, 8, 8, 8, 8, 8, 8, max_edge_moves=10)),
                 objective)
    assert all(inside(x) for x in seen)
    assert search.moves and all(param.limits.contains(m.new[0]) or m.new[0] == param.limits.low
                                for m in search.moves)
    final = search.space[param.name]
    assert isinstance(final, NumericParam) and inside(final.low) and final.high <= param.limits.high


def test_a_limit_at_the_edge_stops_moves_and_the_range_narrows_instead() -> None:
    dropout = NumericParam("regularization.dropout", 0.0, 0.5, limits=Limits.parse("[0, 1)"))
    search = run(CoarseToFineSearch({dropout.name: dropout}, settings(10, 10, 10)),
                 lambda v: -float(v[dropout.name]))  # type: ignore[arg-type]
    assert not search.moves
    final = search.space[dropout.name]
    assert isinstance(final, NumericParam) and final.low == 0.0 and final.high < 0.5


def test_choices_shrink_to_those_among_the_top_trials() -> None:
    space = {"optimizer.lr": lr_param(),
             "activation": ChoiceParam("activation", ("relu", "leaky_relu", "gelu", "tanh"))}

    def objective(values: Mapping[str, object]) -> float:
        return {"gelu": 2.0, "relu": 1.0}.get(str(values["activation"]), 0.0)

    search = run(CoarseToFineSearch(space, settings(20, 10, top_k=2, seed=2)), objective)
    assert search.history[1].space["activation"]["choices"] == ["gelu"]


def test_diverged_and_failed_trials_rank_last_and_never_stop_the_search() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(10, 5))
    specs = search.propose(1)
    records = [TrialRecord(1, s.job, list(s.overrides), s.values, None, DIVERGED, 0.0) for s in specs]
    records[3] = TrialRecord(1, 3, list(specs[3].overrides), specs[3].values, 0.5, COMPLETED, 0.0)
    records[4] = TrialRecord(1, 4, list(specs[4].overrides), specs[4].values, 9.0, DIVERGED, 0.0)
    records[5] = TrialRecord(1, 5, list(specs[5].overrides), specs[5].values, None, FAILED, 0.0)
    search.conclude(1, records)
    assert search.best() is records[3]
    lr = search.space["optimizer.lr"]
    assert isinstance(lr, NumericParam) and lr.low <= float(specs[3].values["optimizer.lr"]) <= lr.high
    all_bad = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(4, 2))
    all_bad.conclude(1, [TrialRecord(1, s.job, list(s.overrides), s.values, None, FAILED, 0.0)
                         for s in all_bad.propose(1)])
    assert all_bad.space["optimizer.lr"] == lr_param() and all_bad.best() is None


def test_minimize_prefers_small_objectives() -> None:
    search = run(CoarseToFineSearch({"optimizer.lr": lr_param()},
                                    settings(20, 10, direction="minimize")),
                 lambda v: log_distance(float(v["optimizer.lr"]), 1e-3))
    best = search.best()
    assert best is not None and best.objective is not None and best.objective < 0.3


def test_job_numbers_run_on_across_rounds() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()},
                                settings(4, 3, 2, pinpoint=Pinpoint(enabled=True, num=5)))
    assert search.round_numbers() == [0, 1, 2, 3]
    assert [search.first_job(s) for s in search.round_numbers()] == [0, 5, 9, 12]


# ---- pinpoint -----------------------------------------------------------------------------


def test_pinpoint_starts_round_one_from_the_rates_that_learned() -> None:
    pin = Pinpoint(enabled=True, low=1e-6, high=1.0, num=7, threshold=0.9)
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(4, pinpoint=pin))
    specs = search.propose(0)
    assert [s.values["optimizer.lr"] for s in specs] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert all("data.subset=100" in s.overrides and "regularization=none" in s.overrides for s in specs)
    learned = {1e-3, 1e-2}
    search.conclude(0, [TrialRecord(0, s.job, list(s.overrides), s.values,
                                    1.0 if s.values["optimizer.lr"] in learned else 0.2, COMPLETED, 0.0)
                        for s in specs])
    lr = search.space["optimizer.lr"]
    assert isinstance(lr, NumericParam)
    assert lr.low == pytest.approx(10 ** -3.5, rel=1e-3) and lr.high == pytest.approx(10 ** -1.5, rel=1e-3)
    assert all(lr.low <= float(s.values["optimizer.lr"]) <= lr.high for s in search.propose(1))
    assert search.summary()["pinpoint"]["learned"] == [1e-3, 1e-2]


def test_without_a_threshold_rates_halfway_to_the_best_count_as_learned() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()},
                                settings(2, pinpoint=Pinpoint(enabled=True, num=7)))
    scores = [0.12, 0.13, 0.2, 0.74, 0.84, None, None]  # 1e-1 and 1 diverge
    search.conclude(0, [TrialRecord(0, s.job, list(s.overrides), s.values, v,
                                    COMPLETED if v is not None else DIVERGED, 0.0)
                        for s, v in zip(search.propose(0), scores)])
    assert search.pinpoint_result["learned"] == [1e-3, 1e-2]


@pytest.mark.parametrize("scores", [
    [None, None, None, None, None, None, 0.0556],  # a lone survivor below chance: it learned nothing
    [0.1, 0.1, 0.1, 0.1, 0.1, None, None],  # every rate at chance
])
def test_without_a_threshold_a_lone_survivor_or_equal_scores_learn_nothing_and_round_one_keeps_its_range(
        scores, caplog) -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param(1e-5, 1e-1)},
                                settings(2, pinpoint=Pinpoint(enabled=True, num=7)))
    with caplog.at_level("WARNING"):
        search.conclude(0, [TrialRecord(0, s.job, list(s.overrides), s.values, v,
                                        COMPLETED if v is not None else DIVERGED, 0.0)
                            for s, v in zip(search.propose(0), scores)])
    assert search.pinpoint_result == {"learned": [], "range": None}
    lr = search.space["optimizer.lr"]
    assert (lr.low, lr.high) == (1e-5, 1e-1)
    assert "pinpoint: no learning rate learned (" in caplog.text


def test_a_pinpoint_metric_no_trial_has_is_named_where_the_pinpoint_concludes(caplog) -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()},
                                settings(2, pinpoint=Pinpoint(enabled=True, num=3, metric="history.-1.train_ac")))
    with caplog.at_level("WARNING"):
        search.conclude(0, [TrialRecord(0, s.job, list(s.overrides), s.values, 0.5, COMPLETED, 0.0)
                            for s in search.propose(0)])
    assert ("pinpoint: no learning rate learned (no completed trial's metrics.json has history.-1.train_ac, "
            "hydra.sweeper.pinpoint.metric)") in caplog.text


def test_pinpoint_param_must_be_a_searched_log_param() -> None:
    with pytest.raises(SearchConfigError, match="hydra.sweeper.pinpoint.param='model.width'"):
        CoarseToFineSearch({"optimizer.lr": lr_param()},
                           settings(2, pinpoint=Pinpoint(enabled=True, param="model.width")))


# ---- parameters only some options of a choice have -----------------------------------------


def test_a_parameter_only_some_options_have_is_set_only_where_the_trial_runs_one() -> None:
    """model.width exists under model=convnet only: a trial that draws mlp runs (and is recorded) without it, in
    its own round, and in a later stage where the first stage held mlp; narrowing reads the trials that had it."""
    width = NumericParam("model.width", 16, 128, log=True, integer=True, limits=AT_LEAST_ONE)
    space = {"optimizer.lr": lr_param(), "model": ChoiceParam("model", ("convnet", "mlp")), "model.width": width}
    only_convnet = {"model.width": Condition("model", frozenset({"convnet"}), "convnet")}

    def objective(values: Mapping[str, object]) -> float:  # the MLP is better: the first stage holds it
        lr, model = float(values.get("optimizer.lr", 1e-3)), values.get("model", "held")  # held: not in values
        return -log_distance(lr, 1e-3) + (10.0 if model == "mlp" else 0.0)

    search = run(CoarseToFineSearch(space, settings(12, 6, top_k=4), conditions=only_convnet), objective)
    trials = [spec for n in (1, 2) for spec in search.records[n]]
    assert {t.values["model"] for t in trials} == {"convnet", "mlp"}
    for t in trials:
        assert ("model.width" in t.values) == (t.values["model"] == "convnet")
        assert any(o.startswith("model.width=") for o in t.overrides) == (t.values["model"] == "convnet")
    staged = Settings(stages=(Stage("arch", ("optimizer.lr", "model"), (Round(12, 2, ()), Round(2, 1, ()))),
                              Stage("width", ("model.width",), (Round(4, 2, ()),))))
    search = run(CoarseToFineSearch(space, staged, conditions=only_convnet), objective)
    assert search.held["model"] == "mlp"
    last = search.propose(len(staged.rounds))
    assert all("model.width" not in spec.values and "model=mlp" in spec.overrides for spec in last)
    assert not any(o.startswith("model.width") for spec in last for o in spec.overrides)


# ---- config errors, records, batching -----------------------------------------------------


@pytest.mark.parametrize("data, message", [
    ({"rounds": []}, r"hydra.sweeper.rounds=\[\] is not allowed"),
    ({"rounds": [{"trials": 0}]}, r"hydra.sweeper.rounds\.0\.trials=0 is not allowed: an integer >= 1"),
    ({"rounds": [{"trials": 2, "epochs": 1}]}, r"hydra.sweeper.rounds\.0\.epochs=1"),
    ({"rounds": [{"trials": 2, "overrides": ["trainer.epochs"]}]}, "key=value"),
    ({"rounds": [{"trials": 2}], "direction": "up"}, "direction='up' is not allowed: maximize or minimize"),
    ({"rounds": [{"trials": 2}], "edge": 0.5}, r"hydra.sweeper.edge=0.5 is not allowed"),
    ({"rounds": [{"trials": 2}], "pinpoint": {"num": 1}}, "hydra.sweeper.pinpoint.num=1"),
    ({"rounds": [{"trials": 4, "top_k": 5}]}, r"hydra.sweeper.rounds\.0\.top_k=5 is not allowed: at most the "
                                              r"round's 4 trials"),
])
def test_bad_settings_name_key_value_and_what_is_allowed(data: dict, message: str) -> None:
    with pytest.raises(SearchConfigError, match=message):
        Settings.from_mapping(data)


def test_a_rounds_top_k_left_out_is_three_or_every_trial_of_a_smaller_round() -> None:
    rounds = Settings.from_mapping({"rounds": [{"trials": 8}, {"trials": 2}, {"trials": 4, "top_k": 4},
                                               {"trials": 3, "top_k": None}]}).stages[0].rounds
    assert [r.top_k for r in rounds] == [3, 2, 4, 3]


def test_limits_parse_and_reject_ranges_outside_them() -> None:
    limits = Limits.parse("[0, 1)")
    assert limits.contains(0.0) and not limits.contains(1.0) and str(limits) == "[0, 1)"
    assert limits.clip(1.5) < 1.0 and Limits.parse("(0, inf)").clip(-1.0) > 0
    with pytest.raises(SearchConfigError, match="limits.x='0..1'"):
        Limits.parse("0..1", key="limits.x")
    with pytest.raises(SearchConfigError, match="must lie within its limits"):
        NumericParam("regularization.dropout", 0.0, 1.5, limits=limits)
    with pytest.raises(SearchConfigError, match="a searched parameter"):
        CoarseToFineSearch({"optimizer.lr": lr_param()},
                           Settings((Stage("search", None, (Round(2, 1, ("optimizer.lr=0.1",)),)),)))


def test_records_round_trip_and_torn_or_foreign_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "search.jsonl"
    record = TrialRecord(2, 7, ["trainer.epochs=3", "optimizer.lr=0.001"], {"optimizer.lr": 0.001},
                         0.93, COMPLETED, 1.5, "7")
    append_record(path, record)
    append_record(path, TrialRecord(2, 8, ["x=1"], {}, None, DIVERGED, 0.1))
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('[1, 2]\n"a foreign line"\n{"round": 2, "job": 9, "overr')
    records = read_records(path)
    assert records[record.key] == record and len(records) == 2


def test_the_table_of_trials_prints_the_test_accuracy_as_a_percentage_as_a_run_does() -> None:
    rows = [TrialRecord(1, 4, ["optimizer.lr=0.001"], {"optimizer.lr": 0.001}, 0.8785, COMPLETED, 2.0,
                        tie_value=0.3512, test_acc=0.8412),
            TrialRecord(1, 5, ["optimizer.lr=0.1"], {"optimizer.lr": 0.1}, None, DIVERGED, 1.0)]
    header, first, second = (line.split() for line in trial_table(rows, {"optimizer.lr": lr_param()},
                                                                   "best_val_loss").splitlines())
    assert header == ["rank", "round", "job", "objective", "best_val_loss", "test_acc", "status", "optimizer.lr"]
    assert first[:7] == ["1", "1", "4", "0.8785", "0.3512", "84.12%", COMPLETED]
    assert second[:7] == ["2", "1", "5", "-", "-", "-", DIVERGED]


def test_consecutive_runs_keep_job_numbers_and_batch_size() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(7))
    specs = [s for s in search.propose(1) if s.job not in (2, 3)]
    assert [[s.job for s in b] for b in consecutive_runs(specs, None)] == [[0, 1], [4, 5, 6]]
    assert [[s.job for s in b] for b in consecutive_runs(specs, 2)] == [[0, 1], [4, 5], [6]]


@pytest.mark.parametrize("a, b, expected", [
    ("[0, 1)", "(0, inf)", "(0, 1)"),       # a tie at 0: the open bound wins
    ("[0, 1]", "[0, 1)", "[0, 1)"),         # a tie at 1: the open bound wins
    ("[0, 2]", "[0.5, 1]", "[0.5, 1]"),     # otherwise the tighter value
])
def test_limits_intersect_keeps_the_tighter_bound(a: str, b: str, expected: str) -> None:
    for first, second in ((a, b), (b, a)):
        both = Limits.parse(first).intersect(Limits.parse(second))
        want = Limits.parse(expected)
        assert (both.low, both.high, both.low_open, both.high_open) == (want.low, want.high, want.low_open,
                                                                        want.high_open)
    assert Limits.parse("[0, 1)").intersect(Limits.parse("(0, inf)")).clip(0.0) > 0


# ---- stages, ties, edge moves on signal ---------------------------------------------------


def record(spec_or_round, job: int, values: dict, objective: Optional[float], status: str = COMPLETED,
           tie: Optional[float] = None, val_samples: Optional[int] = None) -> TrialRecord:
    return TrialRecord(spec_or_round, job, [f"{k}={v}" for k, v in values.items()], values, objective,
                       status, 0.0, tie_value=tie, val_samples=val_samples)


def two_stages(**kwargs: object) -> Settings:
    return Settings(stages=(
        Stage("first", ("optimizer.lr",), (Round(6, 2, ("trainer.epochs=1",)), Round(2, 1, ("trainer.epochs=3",)))),
        Stage("second", None, (Round(4, 1, ("trainer.epochs=3",)),)),
    ), **kwargs)  # type: ignore[arg-type]


def test_a_later_stage_searches_its_params_with_the_best_of_the_earlier_stage_held() -> None:
    space = {"optimizer.lr": lr_param(), "model.hidden_dim": NumericParam("model.hidden_dim", 16, 256, integer=True,
                                                                         limits=AT_LEAST_ONE)}
    search = run(CoarseToFineSearch(space, two_stages()), lambda v: -log_distance(float(v.get("optimizer.lr", 3e-3)), 3e-3)
                 - abs(float(v.get("model.hidden_dim", 100)) - 100) / 1000)
    assert search.round_numbers() == [1, 2, 3]
    first = search.records[1] + search.records[2]
    assert all(set(r.values) == {"optimizer.lr"} for r in first)
    best_lr = max(first, key=lambda r: r.objective).values["optimizer.lr"]
    assert search.held["optimizer.lr"] == best_lr and search.held_from["first"] in {r.job for r in first}
    for r in search.records[3]:
        assert set(r.values) == {"model.hidden_dim"}
        assert f"optimizer.lr={space['optimizer.lr'].format(best_lr)}" in r.overrides
    info = search.summary()
    assert [(s["name"], s["params"], s["rounds"]) for s in info["stages"]] == [
        ("first", ["optimizer.lr"], [1, 2]), ("second", ["model.hidden_dim"], [3])]
    assert [h["stage"] for h in info["rounds"]] == ["first", "first", "second"]


def test_a_stage_naming_an_unknown_param_is_an_error_and_a_dropped_one_is_skipped() -> None:
    with pytest.raises(SearchConfigError, match=r"hydra.sweeper.stages\.0\.params='optimzer.lr' is not allowed"):
        CoarseToFineSearch({"optimizer.lr": lr_param()}, Settings(stages=(
            Stage("a", ("optimzer.lr",), (Round(2),)), Stage("b", None, (Round(2),)))))
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, Settings(stages=(
        Stage("a", ("optimizer.lr",), (Round(2),)), Stage("b", ("schedule.gamma",), (Round(2),)))),
        dropped=["schedule.gamma"])
    assert search.round_numbers() == [1]  # stage b has nothing left to search


def test_a_round_is_named_by_the_key_the_config_gave_it_as_an_override_spells_it() -> None:
    """``rounds=[...]`` names hydra.sweeper.rounds.N (the stage it makes is called "search"); a stage of one's own
    called "search" and a later stage's rounds are named under hydra.sweeper.stages."""
    one = Settings.from_mapping({"rounds": [{"trials": 2, "top_k": 1}, {"trials": 1}]})
    assert [one.round_key(n) for n in (1, 2)] == ["hydra.sweeper.rounds.0", "hydra.sweeper.rounds.1"]
    staged = Settings.from_mapping({"stages": [
        {"name": "search", "params": ["optimizer.lr"], "rounds": [{"trials": 2, "top_k": 1}]},
        {"name": "width", "rounds": [{"trials": 2, "top_k": 1}, {"trials": 1}]}]})
    assert [staged.round_key(n) for n in (1, 2, 3)] == [
        "hydra.sweeper.stages.0.rounds.0", "hydra.sweeper.stages.1.rounds.0", "hydra.sweeper.stages.1.rounds.1"]
    with pytest.raises(SearchConfigError, match=r"^hydra\.sweeper\.stages\.1\.rounds\.1\.overrides='optimizer\.lr=0\.1' "):
        CoarseToFineSearch({"optimizer.lr": lr_param()}, Settings.from_mapping({"stages": [
            {"name": "a", "params": ["optimizer.lr"], "rounds": [{"trials": 2, "top_k": 1}]},
            {"name": "b", "rounds": [{"trials": 2, "top_k": 1}, {"trials": 1, "overrides": ["optimizer.lr=0.1"]}]}]}))


def test_the_ranking_starts_with_the_trials_tied_with_the_best_and_never_chains_ties_downward() -> None:
    """287 of 288 (job 0) ties with the two at 286 (jobs 1 and 2), not with the 285s: the ranking is the tie-breaker's
    order of those three, then the 285s; a 285 never ranks above a 286 through a chain of ties."""
    scores = {0: (287, 0.5), 1: (286, 0.1), 2: (286, 0.6), 3: (285, 0.2), 4: (285, 0.3), 5: (285, 0.4)}
    records = [record(1, job, {"optimizer.lr": 1e-3}, n / 288, tie=tie, val_samples=288)
               for job, (n, tie) in scores.items()]
    order = [r.job for r in ranked(records, "maximize", tie_samples=1)]
    assert order == [1, 0, 2, 3, 4, 5]
    assert [r.job for r in chosen_and_tied(records, "maximize", tie_samples=1)] == order[:3]
    assert [row["samples_behind"] for row in leader_rows([records[j] for j in order], "maximize")] == [0, -1, 0, 1, 1, 1]


def test_ties_within_one_validation_sample_are_broken_by_the_lower_validation_loss() -> None:
    lr = {"optimizer.lr": 1e-3}
    rows = [record(1, 0, lr, 283 / 288, tie=0.080, val_samples=288),
            record(1, 1, lr, 284 / 288, tie=0.095, val_samples=288),  # one sample better, higher loss
            record(1, 2, lr, 281 / 288, tie=0.050, val_samples=288),  # two samples worse
            record(1, 3, lr, 0.9900, status=PRUNED, tie=0.01, val_samples=288),
            record(1, 4, lr, None, status=DIVERGED)]
    assert [r.job for r in ranked(rows, "maximize", tie_samples=1)] == [0, 1, 2, 3, 4]
    assert [r.job for r in ranked(rows, "maximize", tie_samples=0)] == [1, 0, 2, 3, 4]
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(5, tie_break="best_val_loss", tie_samples=1))
    search.conclude(1, rows)
    assert search.best().job == 0
    assert search.separation() == ("the top two trials are 1 of 288 validation samples apart, a tie: "
                                   "best_val_loss decided (0.08 against 0.095)")
    # 283, 284, 281 of 288: the second is one sample ahead of the chosen trial, which the tie-breaker put first
    assert [row["samples_behind"] for row in search.leaders()] == [0, -1, 2]


def test_a_range_does_not_move_at_an_edge_that_scores_like_the_inside() -> None:
    search = CoarseToFineSearch({"regularization.l2": NumericParam("regularization.l2", 1e-6, 1e-1, log=True,
                                                                   limits=POSITIVE)},
                                settings(4, 4, 4, tie_samples=1))
    values = [9e-2, 1e-4, 1e-3, 1e-5]
    flat = [(283 + (i == 0)) / 288 for i in range(4)]  # the edge trial is one sample better: a tie
    search.conclude(1, [record(1, i, {"regularization.l2": v}, a, tie=0.1, val_samples=288)
                        for i, (v, a) in enumerate(zip(values, flat))])
    assert search.moves == []
    narrowed = search.space["regularization.l2"]
    assert narrowed.width_t < math.log(1e5) and narrowed.high < 1.0  # narrowed, at most the margin past the edge
    clear = CoarseToFineSearch({"regularization.l2": NumericParam("regularization.l2", 1e-6, 1e-1, log=True,
                                                                  limits=POSITIVE)},
                               settings(4, 4, 4, tie_samples=1))
    clear.conclude(1, [record(1, i, {"regularization.l2": v}, 0.95 + 0.03 * (i == 0), val_samples=288)
                       for i, v in enumerate(values)])
    assert [m.side for m in clear.moves] == ["upper"]


def test_the_round_before_a_stages_last_only_narrows() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(3, 3))
    search.conclude(1, [record(1, i, {"optimizer.lr": lr}, 1.0 - i) for i, lr in enumerate([9e-2, 1e-3, 1e-5])])
    lr = search.space["optimizer.lr"]
    assert search.moves == [] and lr.high <= 1e-1 and lr.low > 1e-6


def test_messages_write_whole_numbers_whole_and_tie_breakers_apart() -> None:
    """A log-scaled width read [1.6e1, 1.3e2]; a tie decided by 2.2901 against 2.2934 read '2.29 against 2.29'."""
    from expt.search.report import _apart

    assert str(NumericParam("model.num_filters", 16, 128, log=True, integer=True)) == "[16, 128]"
    assert str(lr_param()) == "[1e-6, 1e-1]"  # a rate keeps its exponents
    assert _apart(2.2901, 2.2934) == ("2.29", "2.293")
    assert _apart(0.08, 0.095) == ("0.08", "0.095")


def test_a_last_stage_without_a_completed_trial_speaks_of_no_later_stage(caplog) -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(2))
    with caplog.at_level("WARNING"):
        search.conclude(1, [record(1, s.job, s.values, None, DIVERGED) for s in search.propose(1)])
    assert "stage search: no trial completed" in caplog.text and "later stages" not in caplog.text


def test_the_summary_says_how_far_the_search_got() -> None:
    """A summary written after round 1 of 2 (a sweep stopped there) is not taken for the finished search's."""
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(3, 2))
    search.conclude(1, [record(1, s.job, s.values, 0.5 + s.job / 10) for s in search.propose(1)])
    assert {k: search.summary()[k] for k in ("finished", "rounds_done", "rounds_planned")} == {
        "finished": False, "rounds_done": 1, "rounds_planned": 2}
    search.conclude(2, [record(2, s.job, s.values, 0.5) for s in search.propose(2)])
    assert search.summary()["finished"] is True and search.summary()["rounds_done"] == 2


def test_a_stage_with_nothing_to_search_is_not_counted_as_a_round_to_come() -> None:
    """The second stage searches the rest of the space, here nothing: the search is finished after the first's two
    rounds (its summary said 2 of 3)."""
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, two_stages())
    for n in search.round_numbers():
        search.conclude(n, [record(n, s.job, s.values, 0.5 + s.job / 100) for s in search.propose(n)])
    assert {k: search.summary()[k] for k in ("finished", "rounds_done", "rounds_planned")} == {
        "finished": True, "rounds_done": 2, "rounds_planned": 2}
