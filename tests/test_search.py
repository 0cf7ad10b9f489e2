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
    ChoiceParam,
    CoarseToFineSearch,
    Limits,
    NumericParam,
    Pinpoint,
    Round,
    SearchConfigError,
    Settings,
    TrialRecord,
    append_record,
    consecutive_runs,
    merge_overrides,
    read_records,
    sample_space,
)

Objective = Callable[[Mapping[str, object]], Optional[float]]


def lr_param(low: float = 1e-6, high: float = 1e-1) -> NumericParam:
    return NumericParam("optimizer.lr", low, high, log=True, limits=POSITIVE)


def settings(*trials: int, top_k: int = 3, **kwargs: object) -> Settings:
    rounds = tuple(Round(n, top_k, (f"trainer.epochs={i + 1}",)) for i, n in enumerate(trials))
    return Settings(rounds=rounds, **kwargs)  # type: ignore[arg-type]


def run(search: CoarseToFineSearch, objective: Objective) -> CoarseToFineSearch:
    """Drive every stage with a synthetic objective (None marks a diverged trial)."""
    for stage in search.stages():
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
                                settings(8, 8, 8, 8, 8, 8, edge=0.15, max_edge_moves=5))
    run(search, peak_at(1e-2))
    assert search.moves and all(m.side == "upper" for m in search.moves)
    assert re.fullmatch(r"best optimizer\.lr=\S+ is at the upper edge of \[\S+, \S+\]: "
                        r"moving the range up to \[\S+, \S+\]", search.moves[0].message())
    best = search.best()
    assert best is not None and log_distance(float(best.values["optimizer.lr"]), 1e-2) < 0.5


def test_a_best_value_in_the_outer_tenth_moves_the_range_past_that_edge() -> None:
    search = CoarseToFineSearch({"optimizer.lr": lr_param()}, settings(3, 3))
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
                                settings(6, 6, 6, 6, 6, max_edge_moves=1))
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

    search = run(CoarseToFineSearch({param.name: param}, settings(8, 8, 8, 8, 8, max_edge_moves=10)),
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
    assert search.stages() == [0, 1, 2, 3]
    assert [search.first_job(s) for s in search.stages()] == [0, 5, 9, 12]


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


def test_pinpoint_param_must_be_a_searched_log_param() -> None:
    with pytest.raises(SearchConfigError, match="hydra.sweeper.pinpoint.param='model.width'"):
        CoarseToFineSearch({"optimizer.lr": lr_param()},
                           settings(2, pinpoint=Pinpoint(enabled=True, param="model.width")))


# ---- config errors, records, batching -----------------------------------------------------


@pytest.mark.parametrize("data, message", [
    ({"rounds": []}, r"hydra.sweeper.rounds=\[\] is not allowed"),
    ({"rounds": [{"trials": 0}]}, r"hydra.sweeper.rounds\[0\].trials=0 is not allowed: an integer >= 1"),
    ({"rounds": [{"trials": 2, "epochs": 1}]}, r"hydra.sweeper.rounds\[0\].epochs=1"),
    ({"rounds": [{"trials": 2, "overrides": ["trainer.epochs"]}]}, "key=value"),
    ({"rounds": [{"trials": 2}], "direction": "up"}, "direction='up' is not allowed: maximize or minimize"),
    ({"rounds": [{"trials": 2}], "edge": 0.5}, r"hydra.sweeper.edge=0.5 is not allowed"),
    ({"rounds": [{"trials": 2}], "pinpoint": {"num": 1}}, "hydra.sweeper.pinpoint.num=1"),
])
def test_bad_settings_name_key_value_and_what_is_allowed(data: dict, message: str) -> None:
    with pytest.raises(SearchConfigError, match=message):
        Settings.from_mapping(data)


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
                           Settings((Round(2, 1, ("optimizer.lr=0.1",)),)))


def test_records_round_trip_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "search.jsonl"
    record = TrialRecord(2, 7, ["trainer.epochs=3", "optimizer.lr=0.001"], {"optimizer.lr": 0.001},
                         0.93, COMPLETED, 1.5, "7")
    append_record(path, record)
    append_record(path, TrialRecord(2, 8, ["x=1"], {}, None, DIVERGED, 0.1))
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"round": 2, "job": 9, "overr')
    records = read_records(path)
    assert records[record.key] == record and len(records) == 2


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
