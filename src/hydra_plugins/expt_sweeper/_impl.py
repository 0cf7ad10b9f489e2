"""Adapter between Hydra and :mod:`expt.search`: the sweeper that runs a search round by round.

Hydra hands the sweeper the command-line overrides; with ``hydra.sweeper.params`` they become
the search space (:mod:`.space`). Each round's trials are launched through the configured
launcher, in batches of consecutive jobs, each job recording its trial in ``search.jsonl`` as it
finishes (:mod:`.recording`); after each round the search narrows and ``search_summary.yaml`` is
rewritten, and at the end the chosen trial is logged and the pictures drawn (:mod:`.report`).
The sweeper reads ``search.jsonl`` once a round, for the trials a stopped sweep already finished;
it never reads a run's ``metrics.json``, which stays the run's record on disk.
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from expt.instantiate import to_plain
from expt.overrides import hydra_string
from expt.pruning import PROGRESS_FILE, MedianRule, forget_progress
from expt.search import (
    PINPOINT_ROUND,
    ChoiceParam,
    CoarseToFineSearch,
    SearchConfigError,
    Settings,
    TrialRecord,
    TrialSpec,
    append_record,
    consecutive_runs,
    merge_overrides,
    read_records,
)
from expt.status import COMPLETED, FAILED, MULTIRUN_FILE, PRUNED
from expt.sweep_env import SweepTrial, trial_name

from .config import CoarseToFineSweeperConf
from .errors import SweepFailedError, compact, no_score
from .recording import RECORDS_FILE, RecordingTask, relative, trial_fields, trial_record
from .report import SUMMARY_FILE, log_chosen, log_round, plot, write_summary
from .space import build_space, check_choices, composition_error, conditions, drop_absent, flatten

log = logging.getLogger(__name__)


class CoarseToFineSweeperImpl(Sweeper):
    """Runs :class:`expt.search.CoarseToFineSearch` round by round through Hydra's launcher."""

    def __init__(self, *, params: Any, stages: Any = None, rounds: Any = None, seed: int = Settings.seed,
                 direction: Any = Settings.direction, margin: float = Settings.margin, edge: float = Settings.edge,
                 max_edge_moves: int = Settings.max_edge_moves, limits: Any = None,
                 max_batch_size: Optional[int] = None, pinpoint: Any = None,
                 tie_break: Optional[str] = Settings.tie_break, tie_samples: int = Settings.tie_samples,
                 pruning: Any = None) -> None:
        """The settings as Hydra gives them (``CoarseToFineSweeperConf``: the recipe's preset); a setting left out
        here is the plain search's (:class:`expt.search.Settings`), as for a search run from Python."""
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
        self.warned: set = set()  # the settings warned of (a misspelt metrics key), once a sweep

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
        dropped = drop_absent(space, self.config)
        composed = check_choices(space, fixed, arguments, self.hydra_context.config_loader, self.config)
        found, absent = conditions(space, composed, self.config)
        return CoarseToFineSearch(space, self.settings, fixed, [*dropped, *absent], found)

    def sweep(self, arguments: List[str]) -> List[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        assert self.recorder is not None
        try:
            search = self._search(arguments)
            self._check_round_overrides(arguments, search.fixed, search.space)
        except SearchConfigError as error:
            raise compact(error) from error
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        returns: List[Sequence[JobReturn]] = []
        try:
            self._rounds(search, returns)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM, between trials or in one: the same command continues it
            from expt.requeue import tell_how_to_continue

            tell_how_to_continue(self.sweep_dir, [], str(self.config.hydra.sweep.dir))
            raise
        best = search.best()
        if best is not None:
            log_chosen(search, best)
        pictures = plot(search, self.sweep_dir, self.config)
        log.info("sweep record: %s, summary: %s, pictures: %s", self.recorder.records_path,
                 self.sweep_dir / SUMMARY_FILE, ", ".join(p.name for p in pictures) or "none")
        if best is None:
            raise SweepFailedError(no_score(search.all_records() or search.every_record(), self.recorder.records_path))
        return returns

    def _rounds(self, search: CoarseToFineSearch, returns: List[Sequence[JobReturn]]) -> None:
        """Every round of ``search`` in turn: its trials not yet recorded launched in batches (their returns added to
        ``returns``), then concluded. The directory's multirun.yaml and search_summary.yaml become this command's once
        it launches a trial (or finds every trial recorded): a command refused at a later round as another search's
        leaves them as they were."""
        assert self.config is not None
        started = False
        for n in search.round_numbers():
            specs = search.propose(n)
            log_round(search, n, specs)
            done = self._finished(specs)  # what a stopped sweep already finished
            pending = [spec for spec in specs if spec.key not in done]
            for batch in consecutive_runs(pending, self.max_batch_size):
                if not started:
                    OmegaConf.save(self.config, self.sweep_dir / MULTIRUN_FILE)  # the trials read it
                    started = True
                results = self._launch(search, batch)
                returns.append(results)
                done.update(self._records(batch, results))
            search.conclude(n, [done[spec.key] for spec in specs])
            self._warn_of_unread_keys(n, [done[spec.key] for spec in specs])
            if started:
                write_summary(search, self.sweep_dir)
            ran = search.every_record()
            if ran and all(r.status == FAILED for r in ran) and n != search.round_numbers()[-1]:
                log.error("every trial so far failed (%d): the sweep stops before its next round", len(ran))
                break  # what fails every trial (the data, a value they share) would fail the next rounds too
        if not started:  # every trial was already recorded: the search as this command reads it
            OmegaConf.save(self.config, self.sweep_dir / MULTIRUN_FILE)
            write_summary(search, self.sweep_dir)

    def _check_round_overrides(self, arguments: List[str], fixed: Sequence[str], space: Dict[str, Any]) -> None:
        """The overrides of every round and of the pinpoint stage, refused before the first trial where they cannot
        run: a misspelt key or option (with the keys there are), as on the command line, in a sweep of expt's own
        (its job name); and in any sweep, a value Hydra cannot compose with the command line's (``fixed``) and any
        option of a searched ``choice()`` in ``space``, which would otherwise stop the sweep when that round came,
        after the rounds before it had trained."""
        assert self.config is not None and self.hydra_context is not None
        places = [(f"{self.settings.round_key(n)}.overrides", round_.overrides)
                  for n, round_ in enumerate(self.settings.rounds, start=1)]
        if self.settings.pinpoint.enabled:
            places.insert(0, ("hydra.sweeper.pinpoint.overrides", self.settings.pinpoint.overrides))
        places = [(where, list(overrides)) for where, overrides in places if overrides]
        if OmegaConf.select(self.config, "hydra.job.name") == "expt":
            from expt.config import unknown_override

            if unknown_override(list(arguments)) is not None:
                return  # the command line's own: Hydra and expt's command line report it
            for where, overrides in places:
                problem = unknown_override([*arguments, *overrides])
                if problem is not None:
                    raise SearchConfigError(f"{where}: {problem}")
        # a round's overrides may need a searched option (optimizer.momentum with optimizer=choice(momentum,...)):
        # they are refused only where they compose with none of the options a trial can draw
        drawn = [[]] + [[f"{name}={option}"] for name, param in space.items() if isinstance(param, ChoiceParam)
                        for option in param.choices]
        loader = self.hydra_context.config_loader
        for where, overrides in places:
            first: Optional[Exception] = None
            for choice in drawn:
                try:
                    loader.load_sweep_config(self.config, list(merge_overrides(fixed, choice, overrides)))
                    break
                except Exception as error:  # Hydra's composition errors, each a message of its own
                    first = first or error
            else:
                raise SearchConfigError(f"{where} do not compose: {composition_error(first)}")

    def _finished(self, specs: List[TrialSpec]) -> Dict[Any, TrialRecord]:
        """The records a stopped sweep left of this round's trials, by key, read from ``search.jsonl``. A failed
        trial is run again (what failed it, a missing file say, may have been fixed), and so is every trial
        not recorded: the scores they reported for early stopping are forgotten, so that the trials run
        again compare themselves with what they would have met in a sweep never stopped. Records of another
        search stop the sweep: a job number of this round's that ran other overrides, or in another round (a
        pinpoint stage turned on since, whose trials take the first job numbers), whose run directory this
        round's trial would replace."""
        assert self.recorder is not None
        done = read_records(self.recorder.records_path)
        by_job = {record.job: record for record in done.values()}
        for spec in specs:
            found = by_job.get(spec.job)
            if found is not None and (found.round, tuple(found.overrides)) != (spec.round, spec.overrides):
                raise compact(SearchConfigError(
                    f"{self.sweep_dir} holds the trials of another search: its job {spec.job} (round {found.round}) "
                    f"ran {' '.join(found.overrides) or 'no overrides'}, where this sweep's job {spec.job} "
                    f"(round {spec.round}) is {' '.join(spec.overrides) or 'no overrides'}. Give this sweep a "
                    f"directory of its own (hydra.sweep.dir=...), or remove that directory's {RECORDS_FILE} to start "
                    "it there anew."))
        finished = {spec.key: done[spec.key] for spec in specs
                    if spec.key in done and done[spec.key].status != FAILED}
        again = [spec.job for spec in specs if spec.key not in finished]
        if any(spec.key in done for spec in specs):
            failed = sum(1 for spec in specs if spec.key in done) - len(finished)
            log.info("resuming: %d of %d trials of this round are already in %s%s", len(finished), len(specs),
                     RECORDS_FILE, f"; the {failed} that failed run again" if failed else "")
        if again and specs:
            forget_progress(self.sweep_dir / PROGRESS_FILE, specs[0].round, again)
        return finished

    def _warn_of_unread_keys(self, round_number: int, records: List[TrialRecord]) -> None:
        """A warning, once a sweep, for a tie-breaker or pinpoint metric given that no completed trial of the round
        had in its metrics (a misspelt key): ties then go by job order, and no pinpoint rate learns."""
        completed = [r for r in records if r.status == COMPLETED]
        checks = []  # the preset's tie-breaker is expt's best_val_loss: an app of other metrics leaves it unread
        if self.settings.tie_break != CoarseToFineSweeperConf.tie_break:
            checks.append(("hydra.sweeper.tie_break", self.settings.tie_break, "tie_value"))
        if round_number == PINPOINT_ROUND:
            checks.append(("hydra.sweeper.pinpoint.metric", self.settings.pinpoint.metric, "metric"))
        for key, name, field in checks:
            if completed and name and key not in self.warned and all(getattr(r, field) is None for r in completed):
                self.warned.add(key)
                log.warning("%s=%s is a number in none of the %d completed trials' metrics of %s: give a key of each "
                            "run's metrics.json (best_val_loss, or history.-1.train_acc for a value of the last epoch)",
                            key, name, len(completed),
                            "the pinpoint stage" if round_number == PINPOINT_ROUND else f"round {round_number}")

    def _environment(self, search: CoarseToFineSearch, spec: TrialSpec) -> List[str]:
        """What each trial's own process (any launcher) is told through ``hydra.job.env_set``: without ``+`` where
        the config declares the key, as expt's does (Hydra's launchers leave such settings out of their job lines)."""
        label = trial_name(spec.round, spec.job, [
            f"{name.rsplit('.', 1)[-1]}={search.space[name].format(value)}" if name in search.space
            else f"{name.rsplit('.', 1)[-1]}={value}" for name, value in spec.values.items()])
        pruning = self.settings.pruning
        prune = pruning.enabled and spec.round != PINPOINT_ROUND
        trial = SweepTrial(round=spec.round, job=spec.job, final=search.is_final(spec.round), label=label,
                           progress=self.sweep_dir / PROGRESS_FILE if prune else None,
                           rule=MedianRule(pruning.min_trials, pruning.warmup_epochs) if prune else None)
        declared = OmegaConf.select(self.config, "hydra.job.env_set", default=None) or {}
        return [f"{'' if key in declared else '+'}hydra.job.env_set.{key}={_quote(value)}"
                for key, value in trial.variables().items()]

    def _launch(self, search: CoarseToFineSearch, batch: List[TrialSpec]) -> Sequence[JobReturn]:
        assert self.recorder is not None
        overrides = [[*spec.overrides, *self._environment(search, spec)] for spec in batch]
        if not getattr(self.launcher, "composes_batch_first", False):  # else the launcher's composition checks them
            self.validate_batch_is_legal(overrides)
        self.recorder.trials = {spec.job: self._trial(spec) for spec in batch}
        return self.launcher.launch(overrides, initial_job_idx=batch[0].job)

    def _trial(self, spec: TrialSpec) -> Dict[str, Any]:
        metric = self.settings.pinpoint.metric if spec.round == PINPOINT_ROUND else None
        return trial_fields(spec, metric, self.settings.tie_break)

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
                                      None if run_dir is None else relative(Path(run_dir), self.sweep_dir), error)
                append_record(self.recorder.records_path, record)
            records[spec.key] = record
            if record.status == PRUNED:
                log.info("job %d (round %d) pruned after %s epoch%s at %s", spec.job, spec.round, record.epochs,
                         "" if record.epochs == 1 else "s",
                         "-" if record.objective is None else f"{record.objective:.4g}")
            elif record.status != COMPLETED:
                log.warning("job %d (round %d) %s%s", spec.job, spec.round, record.status,
                            f": {record.error}" if record.error else "")
        return records


def _quote(value: Any) -> str:
    """A value for an override, quoted as a string when it is not a plain integer."""
    text = str(value)
    return text if text.isdigit() else hydra_string(text)
