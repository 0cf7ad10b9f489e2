"""Adapter between Hydra and :mod:`expt.search`.

Hydra hands the sweeper the command-line overrides; this module turns
``hydra.sweeper.params`` and those overrides into a search space (with Hydra's own override
parser), launches each round's trials as one batch through the configured launcher, records
every trial in ``search.jsonl`` as it finishes and writes ``search_summary.yaml``.

A trial's result takes one path: its task function's return value (expt returns an
:class:`expt.status.RunResult`, the objective carrying the run's metrics) becomes its record
(:func:`trial_record`), in the trial's own job as it finishes (:class:`RecordingTask`, which
appends it to ``search.jsonl`` and returns it as the job's ``JobReturn.return_value``) or, for a
job that did not run that wrapper (a population's member) or failed outside it, in the sweeper
from the ``JobReturn``. The sweeper reads ``search.jsonl`` once a round, for the trials a stopped
sweep already finished; it never reads a run's ``metrics.json``, which stays the run's record on disk.
"""

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from expt.instantiate import to_plain
from expt.pruning import PROGRESS_FILE, MedianRule
from expt.search import (
    PINPOINT_ROUND,
    POSITIVE,
    ChoiceParam,
    CoarseToFineSearch,
    Limits,
    NumericParam,
    Param,
    SearchConfigError,
    Settings,
    TrialRecord,
    TrialSpec,
    append_record,
    as_objective,
    consecutive_runs,
    default_limits,
    override_key,
    read_records,
    returned_metrics,
)
from expt.status import COMPLETED, DIVERGED, FAILED, PRUNED
from expt.sweep_env import SweepTrial

from .errors import PREFIX, SweepFailedError, compact

log = logging.getLogger(__name__)

RECORDS_FILE = "search.jsonl"
SUMMARY_FILE = "search_summary.yaml"
TABLE_ROWS = 10
ALLOWED_TAGS = {"log", "int"}


def flatten(mapping: Optional[Mapping[str, Any]], prefix: str = "") -> Dict[str, Any]:
    """Nested keys to dotted ones; a nested spelling wins over the same dotted key.

    Defaults use dotted keys (``optimizer.lr``) while command-line overrides such as
    ``hydra.sweeper.params.optimizer.lr=...`` arrive nested, so the nested one is the newer.
    """
    flat: Dict[str, Any] = {}
    nested: Dict[str, Any] = {}
    for key, value in (mapping or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            nested.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    flat.update(nested)
    return flat


def _limits_for(name: str, log_scale: bool, integer: bool, low: float,
                declared: Mapping[str, Any]) -> Limits:
    if name not in declared or declared[name] is None:
        return default_limits(log_scale, integer, low)
    limits = Limits.parse(str(declared[name]), key=f"hydra.sweeper.limits.{name}")
    return limits.intersect(POSITIVE) if log_scale else limits


def param_from_override(override: Override, declared_limits: Mapping[str, Any],
                        on_command_line: bool = False) -> Param:
    """One search parameter from an ``interval``, ``range`` or ``choice`` sweep override.

    Errors name the parameter as the user wrote it: ``hydra.sweeper.params.<key>`` for the
    sweeper's params, the override itself for a sweep given on the command line.
    """
    name = override.get_key_element()
    where = name if on_command_line else f"hydra.sweeper.params.{name}"
    try:
        return _param(override, name, where, declared_limits)
    except SearchConfigError as error:
        if error.allowed is None:
            raise
        written = _written(override)
        origin = " (a sweep on the command line)" if on_command_line else ""
        raise SearchConfigError(f"{where}={written}{origin} is not allowed: {error.allowed}.",
                                error.allowed) from None


def _written(override: Override) -> str:
    """The value of a sweep override as the user wrote it."""
    if override.input_line and "=" in override.input_line:
        return override.input_line.split("=", 1)[1]
    return str(override.value())


def _param(override: Override, name: str, where: str, declared_limits: Mapping[str, Any]) -> Param:
    value = override.value()
    tags = set(getattr(value, "tags", set()))
    if tags - ALLOWED_TAGS:
        raise SearchConfigError(
            f"{where}={_written(override)} uses tag {sorted(tags - ALLOWED_TAGS)[0]}:"
            f" the tags allowed are {', '.join(sorted(ALLOWED_TAGS))}")
    if isinstance(value, ChoiceSweep):
        if tags:
            raise SearchConfigError(f"{where}: tags ({', '.join(sorted(tags))}) do not apply to choice()")
        return ChoiceParam(name, tuple(override.sweep_string_iterator()))
    log_scale = "log" in tags
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        # tag(int, interval(a, b)) or, as the Optuna sweeper spells it, int(interval(a, b))
        integer = "int" in tags or (isinstance(value.start, int) and isinstance(value.end, int))
        low, high = float(value.start), float(value.end)
        if integer and (low != int(low) or high != int(high)):
            raise SearchConfigError(f"{where}=tag(int, interval({low}, {high})) needs integer bounds")
        limits = _limits_for(name, log_scale, integer, low, declared_limits)
        return NumericParam(name, low, high, log=log_scale, integer=integer, limits=limits)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        assert start is not None and stop is not None
        if step is None or step <= 0 or stop <= start:
            raise SearchConfigError(
                f"{where}=range({start}, {stop}, {step}) is empty: use range(start, stop[, step])"
                " with start < stop and a positive step")
        integer = all(isinstance(x, int) for x in (start, stop, step))
        last = start + (math.ceil((stop - start) / step) - 1) * step
        limits = _limits_for(name, log_scale, integer, float(start), declared_limits)
        return NumericParam(name, float(start), float(last), log=log_scale, integer=integer,
                            step=float(step), anchor=float(start), limits=limits)
    raise SearchConfigError(
        f"{where}={_written(override)} is not a search range: use interval(),"
        " tag(log, interval()), range() or choice()")


def build_space(
    params: Sequence[Override], arguments: Sequence[Override], declared_limits: Mapping[str, Any]
) -> Tuple[Dict[str, Param], List[str]]:
    """The search space and the fixed overrides every trial gets.

    ``params`` come from ``hydra.sweeper.params``, ``arguments`` from the command line; a
    sweep on the command line replaces the param of that key, and a plain value there pins
    the key, taking it out of the search.
    """
    space: Dict[str, Param] = {}
    fixed: Dict[str, str] = {}
    from_command_line = [False] * len(params) + [True] * len(arguments)
    for override, on_command_line in zip(list(params) + list(arguments), from_command_line):
        line = override.input_line or (
            f"{override.get_key_element()}={override.get_value_element_as_str()}")
        key = override_key(line)
        if override.is_sweep_override():
            space[key] = param_from_override(override, declared_limits, on_command_line)
            fixed.pop(key, None)
            continue
        fixed[key] = line
        if key in space and on_command_line:
            log.info("%s is fixed on the command line (%s): not searched", key, line)
            del space[key]
    return space, list(fixed.values())


class RecordingTask:
    """The task function as the launcher sees it: runs the trial, appends its record and returns it.

    Records are written by the job itself, the moment it finishes, so a sweep that is stopped
    mid-round keeps every finished trial. A trial that raises is recorded as failed and its job
    completes with that record: the sweep goes on. Instances are pickled to parallel and remote
    workers (joblib, submitit) with the trial table of the batch being launched.
    """

    def __init__(self, task_function: TaskFunction, records_path: Path) -> None:
        self.task_function = task_function
        self.records_path = records_path
        self.trials: Dict[int, Dict[str, Any]] = {}

    def __call__(self, cfg: DictConfig) -> Any:
        hydra_cfg = HydraConfig.get()
        trial = self.trials.get(int(hydra_cfg.job.num))
        if trial is None:
            return self.task_function(cfg)
        run_dir = _relative(Path(hydra_cfg.runtime.output_dir), self.records_path.parent)
        start = time.time()
        try:
            value = self.task_function(cfg)
        except Exception as error:
            record = trial_record(trial, None, time.time() - start, run_dir, error)
        else:
            record = trial_record(trial, value, time.time() - start, run_dir)
        append_record(self.records_path, record)
        return record


def trial_record(trial: Mapping[str, Any], value: Any, seconds: Optional[float], run_dir: Optional[str],
                 error: Optional[BaseException] = None) -> TrialRecord:
    """A finished trial's line of ``search.jsonl``, from what its task returned (``value``) or the error it raised.

    The one place a trial's result becomes its record: the objective, the status (the run's own, else
    completed, or diverged without a finite objective), and from the run's metrics the tie-breaker, the
    pinpoint metric, the validation split's size, the test accuracy and the epochs trained. ``seconds``
    None: the run's own ``seconds`` (a job that did not time the trial itself).
    """
    metrics = returned_metrics(value) if error is None else {}
    objective = as_objective(metrics.get("objective"))
    status = metrics["status"] if isinstance(metrics.get("status"), str) else COMPLETED
    if error is not None:
        status = FAILED
    elif status == COMPLETED and objective is None:
        status = DIVERGED
    if seconds is None:
        seconds = metrics["seconds"] if as_objective(metrics.get("seconds")) is not None else 0.0

    def lookup(key: Optional[str]) -> Optional[float]:
        return as_objective(_lookup(metrics, key)) if key else None

    def integer(key: str) -> Optional[int]:
        return metrics[key] if isinstance(metrics.get(key), int) else None

    return TrialRecord(round=trial["round"], job=trial["job"], overrides=list(trial["overrides"]),
                       values=dict(trial["values"]), objective=objective, status=status, seconds=round(seconds, 3),
                       run_dir=run_dir, metric=lookup(trial.get("metric")),
                       error=None if error is None else describe(error), tie_value=lookup(trial.get("tie_break")),
                       val_samples=integer("val_samples"), test_acc=as_objective(metrics.get("test_acc")),
                       epochs=integer("epochs_completed"))


def _trial(spec: TrialSpec, metric: Optional[str] = None, tie_break: Optional[str] = None) -> Dict[str, Any]:
    """A trial as :attr:`RecordingTask.trials` holds it (``metric``, ``tie_break``: keys of the run's metrics to record)."""
    return {"round": spec.round, "job": spec.job, "overrides": list(spec.overrides),
            "values": dict(spec.values), "metric": metric, "tie_break": tie_break}


def _lookup(data: Any, dotted: str) -> Any:
    """``history.-1.train_acc``: keys of mappings and (possibly negative) indices of lists."""
    for part in dotted.split("."):
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


class CoarseToFineSweeperImpl(Sweeper):
    """Runs :class:`expt.search.CoarseToFineSearch` round by round through Hydra's launcher."""

    def __init__(self, *, params: Any, stages: Any = None, rounds: Any = None, seed: int = 0,
                 direction: Any = "maximize", margin: float = 0.1, edge: float = 0.1,
                 max_edge_moves: int = 3, limits: Any = None, max_batch_size: Optional[int] = None,
                 pinpoint: Any = None, tie_break: Optional[str] = None, tie_samples: int = 0,
                 pruning: Any = None) -> None:
        super().__init__()
        self.params = flatten(to_plain(params))
        self.limits = flatten(to_plain(limits))
        # direction arrives as the Direction enum, whose str() (Direction.maximize) Settings reads
        self.settings = Settings.from_mapping({
            "stages": to_plain(stages), "rounds": to_plain(rounds), "seed": seed,
            "direction": direction, "margin": margin, "edge": edge, "max_edge_moves": max_edge_moves,
            "pinpoint": to_plain(pinpoint), "tie_break": tie_break, "tie_samples": tie_samples,
            "pruning": to_plain(pruning)})
        if max_batch_size is not None and (isinstance(max_batch_size, bool) or max_batch_size < 1):
            raise SearchConfigError(
                f"hydra.sweeper.max_batch_size={max_batch_size!r} is not allowed: "
                "null (a whole round at once) or an integer >= 1")
        self.max_batch_size = max_batch_size
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None
        self.recorder: Optional[RecordingTask] = None
        self.sweep_dir = Path(".")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.recorder = RecordingTask(task_function, self.sweep_dir / RECORDS_FILE)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=self.recorder, config=config)

    def _search(self, arguments: List[str]) -> CoarseToFineSearch:
        assert self.hydra_context is not None and self.config is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lines = [f"{key}={value}" for key, value in self.params.items() if value is not None]
        space, fixed = build_space(parser.parse_overrides(lines),
                                   parser.parse_overrides(arguments), self.limits)
        dropped = [name for name in space if not _in_config(self.config, name)]
        for name in dropped:
            log.info("%s is not a key of this config (%s): not searched", name, _choices(self.config))
            del space[name]
        return CoarseToFineSearch(space, self.settings, fixed, dropped)

    def _check_choices(self, search: CoarseToFineSearch, arguments: Sequence[str]) -> None:
        """Compose every option of every ``choice()`` once, before the first trial.

        A trial draws one option of each choice, so an option that cannot be composed (``activation=foo``
        where the group has no ``foo``) would otherwise fail only the trials that draw it, or stop the
        sweep when it is drawn by a stage's best trial. An option of a config group is checked against
        the group's options, which the error lists.
        """
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        groups = OmegaConf.select(self.config, "hydra.runtime.choices", default=None) or {}
        on_command_line = {override_key(a) for a in arguments if "choice(" in a}
        for name, param in search.space.items():
            if not isinstance(param, ChoiceParam):
                continue
            where = name if name in on_command_line else f"hydra.sweeper.params.{name}"
            written = f"{where}=choice({', '.join(param.choices)})"
            options = sorted(loader.get_group_options(name)) if name in groups else []
            for option in param.choices:
                # a list of options ([l2,dropout]) for a group whose value is a list
                names = [n.strip() for n in option.strip("[]").split(",") if n.strip()] if option.startswith(
                    "[") else [option]
                bad = [n for n in names if n not in options]
                if options and bad:
                    raise SearchConfigError(
                        f"{written} is not allowed: {bad[0]} is not an option of the config group {name}, "
                        f"whose options are: {', '.join(options)}.")
                try:
                    loader.load_sweep_config(self.config, [*search.fixed, f"{name}={option}"])
                except Exception as error:  # Hydra's composition errors, each a message of its own
                    cause = f": {str(error.__cause__).splitlines()[0]}" if str(error.__cause__ or "") else ""
                    first = " ".join(f"{error}{cause}".split())
                    raise SearchConfigError(
                        f"{written} is not allowed: the option {option} does not compose ({first})"
                        + (f"; the group's options are: {', '.join(options)}." if options else ".")) from None

    def sweep(self, arguments: List[str]) -> List[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        assert self.recorder is not None
        try:
            search = self._search(arguments)
            self._check_choices(search, arguments)
        except SearchConfigError as error:
            raise compact(error) from error
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        returns: List[Sequence[JobReturn]] = []
        for n in search.round_numbers():
            specs = search.propose(n)
            self._log_round(search, n, specs)
            done = read_records(self.recorder.records_path)  # what a stopped sweep already finished
            pending = [spec for spec in specs if spec.key not in done]
            if len(pending) < len(specs):
                log.info("resuming: %d of %d trials of this round are already in %s",
                         len(specs) - len(pending), len(specs), RECORDS_FILE)
            for batch in consecutive_runs(pending, self.max_batch_size):
                results = self._launch(search, batch)
                returns.append(results)
                done.update(self._records(batch, results))
            search.conclude(n, [done[spec.key] for spec in specs])
            self._write_summary(search)
        best = search.best()
        if best is not None:
            log.info("top trials (%s):\n%s", search.settings.direction, search.table(TABLE_ROWS))
            tie = (f", {search.settings.tie_break} {best.tie_value:.4g}"
                   if search.settings.tie_break and best.tie_value is not None else "")
            test = f"; its test accuracy {best.test_acc:.4g}" if best.test_acc is not None else ""
            log.info("chosen: job %d (round %d), objective %.4g%s%s: %s", best.job, best.round,
                     best.objective, tie, test, " ".join(best.overrides))
            separation = search.separation()
            if separation:
                log.info("%s", separation)
        pictures = self._plot(search)
        log.info("sweep record: %s, summary: %s, pictures: %s", self.recorder.records_path,
                 self.sweep_dir / SUMMARY_FILE, ", ".join(p.name for p in pictures) or "none")
        if best is None:
            raise SweepFailedError(no_score(search.all_records(), self.sweep_dir))
        return returns

    def _round_epochs(self, search: CoarseToFineSearch) -> Dict[int, int]:
        """Epochs each round trains, from its ``trainer.epochs`` override or the config's value."""
        assert self.config is not None
        default = OmegaConf.select(self.config, "trainer.epochs", default=None)
        out: Dict[int, int] = {}
        for h in search.history:
            epochs = default
            for item in h.overrides:
                if override_key(item) == "trainer.epochs":
                    epochs = item.split("=", 1)[1]
            if epochs is not None and str(epochs).isdigit():
                out[h.round] = int(epochs)
        return out

    def _plot(self, search: CoarseToFineSearch) -> List[Path]:
        """The objective against each searched parameter and over the trials (expt.dashboard.plot_sweep)."""
        from expt.dashboard import plot_sweep

        records = [{"round": r.round, "job": r.job, "values": dict(r.values), "objective": r.objective,
                    "status": r.status, "val_loss": r.tie_value, "val_samples": r.val_samples, "epochs": r.epochs}
                   for r in search.all_records()]
        log_params = {name: isinstance(param, NumericParam) and param.log
                      for name, param in search.space.items()}
        moves = [{"round": m.after_round + 1, "param": m.param, "old": list(m.old), "new": list(m.new)}
                 for m in search.moves]
        return plot_sweep(records, log_params, self.sweep_dir, moves, direction=search.settings.direction,
                          metric="val_acc", round_epochs=self._round_epochs(search),
                          tie_samples=search.settings.tie_samples)

    def _environment(self, search: CoarseToFineSearch, spec: TrialSpec) -> List[str]:
        """What each trial's own process (any launcher) is told through ``hydra.job.env_set``."""
        label = f"r{spec.round}-j{spec.job} " + " ".join(
            f"{name.rsplit('.', 1)[-1]}={search.space[name].format(value)}" if name in search.space
            else f"{name.rsplit('.', 1)[-1]}={value}" for name, value in spec.values.items())
        pruning = self.settings.pruning
        prune = pruning.enabled and spec.round != PINPOINT_ROUND
        trial = SweepTrial(round=spec.round, job=spec.job, final=search.is_final(spec.round), label=label.strip(),
                           progress=self.sweep_dir / PROGRESS_FILE if prune else None,
                           rule=MedianRule(pruning.min_trials, pruning.warmup_epochs) if prune else None)
        return [f"+hydra.job.env_set.{key}={_quote(value)}" for key, value in trial.variables().items()]

    def _launch(self, search: CoarseToFineSearch, batch: List[TrialSpec]) -> Sequence[JobReturn]:
        assert self.recorder is not None
        overrides = [[*spec.overrides, *self._environment(search, spec)] for spec in batch]
        self.validate_batch_is_legal(overrides)
        self.recorder.trials = {spec.job: self._trial(spec) for spec in batch}
        return self.launcher.launch(overrides, initial_job_idx=batch[0].job)

    def _trial(self, spec: TrialSpec) -> Dict[str, Any]:
        metric = self.settings.pinpoint.metric if spec.round == PINPOINT_ROUND else None
        return _trial(spec, metric, self.settings.tie_break)

    def _records(self, batch: List[TrialSpec], results: Sequence[JobReturn]) -> Dict[Any, TrialRecord]:
        """The batch's records from its ``JobReturn``s: the one each job appended and returned, or, for a job that
        did not record itself, one made here from its return value or error (and appended)."""
        assert self.recorder is not None
        records: Dict[Any, TrialRecord] = {}
        for spec, result in zip(batch, results):
            value: Any = None
            error: Optional[BaseException] = None
            try:  # Hydra's public accessor: the task's value, or (status FAILED) the error it raised
                value = result.return_value
            except Exception as exc:
                error = exc
            if isinstance(value, TrialRecord):
                record = value
            else:
                run_dir = OmegaConf.select(result.hydra_cfg, "hydra.runtime.output_dir") \
                    if result.hydra_cfg is not None else None
                record = trial_record(self._trial(spec), value, None,
                                      None if run_dir is None else _relative(Path(run_dir), self.sweep_dir), error)
                append_record(self.recorder.records_path, record)
            records[spec.key] = record
            if record.status == PRUNED:
                log.info("job %d (round %d) pruned after %s epochs at %s", spec.job, spec.round,
                         record.epochs, record.objective)
            elif record.status != COMPLETED:
                log.warning("job %d (round %d) %s%s", spec.job, spec.round, record.status,
                            f": {record.error}" if record.error else "")
        return records

    def _log_round(self, search: CoarseToFineSearch, n: int, specs: List[TrialSpec]) -> None:
        extra = " ".join(search.history[-1].overrides) or "no extra overrides"
        if n == PINPOINT_ROUND:
            param = search.settings.pinpoint.param
            rates = ", ".join(str(spec.values[param]) for spec in specs)
            log.info("pinpoint: %d trials (jobs %d-%d) with %s; %s at %s", len(specs),
                     specs[0].job, specs[-1].job, extra, param, rates)
            return
        names = search.stage_params[search.settings.stage_of(n)]
        ranges = ", ".join(f"{name} in {search.space[name]}" for name in names)
        held = " ".join(f"{k}={search.space[k].format(v)}" for k, v in search.held.items())
        log.info("round %d/%d (stage %s): %d trials (jobs %d-%d) with %s; %s%s", n,
                 len(search.settings.rounds), search.stage_name(n), len(specs), specs[0].job,
                 specs[-1].job, extra, ranges, f"; holding {held}" if held else "")

    def _write_summary(self, search: CoarseToFineSearch) -> None:
        path = self.sweep_dir / SUMMARY_FILE
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(search.summary(), sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)


def describe(error: BaseException) -> str:
    """A trial's error as its record keeps it: ``Error in the config: ...`` or ``<type>: <message>``."""
    text = str(error)
    return text if text.startswith(PREFIX) else f"{type(error).__name__}: {text}"


def no_score(records: Sequence[TrialRecord], sweep_dir: Path) -> str:
    """The paragraph that ends a sweep none of whose trials gave a score: how they ended, and the first error."""
    counts: Dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    ended = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    first = min((r for r in records if r.error), key=lambda r: r.job, default=None)
    if first is not None:
        why = (f"the first failure, job {first.job} (round {first.round}): {first.error}"
               + ("" if first.error.endswith(".") else "."))
        if counts.get(FAILED, 0) == len(records):
            why += (" A value every trial shares (pinned on the command line, in the config or in the"
                    " round's overrides) fails them all: fix it and run the sweep again.")
    else:
        why = ("no trial recorded an error; diverged trials stopped when their training loss became NaN or"
               " exceeded trainer.divergence_factor times its initial value: search lower learning rates.")
    return (f"Every trial of the sweep ended without a score ({len(records)} trial(s): {ended}), so nothing was "
            f"chosen; {why} Each trial's record is in {sweep_dir / RECORDS_FILE}.")


def _quote(value: Any) -> str:
    """A value for an override, quoted as a string when it is not a plain integer."""
    text = str(value)
    if text.isdigit():
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in_config(config: DictConfig, key: str) -> bool:
    """Whether the composed config has ``key`` (a config group's name counts)."""
    return OmegaConf.select(config, key, default=_ABSENT) is not _ABSENT


_ABSENT = object()


def _choices(config: DictConfig) -> str:
    """The config's group choices, to say which config lacks a key."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    shown = [f"{k}={v}" for k, v in choices.items() if not str(k).startswith("hydra") and v is not None]
    return " ".join(shown[:8]) or "its defaults"
