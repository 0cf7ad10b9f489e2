"""Adapter between Hydra's Launcher API and :mod:`expt.population`.

``launch`` composes each job's config as Hydra's basic launcher does (reading the config files once for
the jobs that differ only in values they set: :mod:`._compose`), groups the jobs whose
configs differ only in per-member values (:func:`expt.population.group_key`), trains each group
of two or more as one population, and returns one ``JobReturn`` a job, in order.

A trained member's ``JobReturn`` is built from the population's metrics for it, with the job's own
bookkeeping as Hydra's ``run_job`` does it (``.hydra/`` files, written as the group starts; working
directory, job logging, ``env_set``, callbacks, the ``JobReturn``'s fields and status:
:meth:`PopulationLauncherImpl._member_return`) but from what :meth:`PopulationLauncherImpl._prepare` made
already (the task config, a copy; HydraConfig's view, which holds the job's own ``hydra`` node and is also
the ``JobReturn``'s ``hydra_cfg``, where ``run_job`` returns a copy), rather than making them again. Its
"task" returns the member's :class:`expt.status.RunResult` (what ``python -m expt`` returns after a lone
run) or raises the error that stopped the population; the launcher's task function is not called for a
member, but a task function that records its trial as the job ends (the coarse-to-fine sweeper's
``RecordingTask``, through its ``around``) records the member's as its job ends. A sweeper therefore reads
a member's result from its ``JobReturn`` as it reads a lone run's. On Ctrl-C every member keeps what its
finished epochs measured, as a lone run does. A member's directory is locked while its group trains, as a lone
run's is (a job whose directory another process holds fails alone). Jobs that cannot join a group, and every job of a group
whose population failed to start, run one at a time through ``run_job`` and the launcher's task
function, like the basic launcher.
"""

import contextlib
import copy
import io
import logging
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra import version
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (JobReturn, JobRuntime, JobStatus, configure_log, env_override, run_job,
                              setup_globals)
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, flag_override, open_dict, read_write

from expt.config import to_yaml
from expt.errors import ConfigError, StorageError, described
from expt.files import only_writer
from expt.job_errors import TrialStorageError, as_trial_error
from expt.overrides import split_override
from expt.requeue import tell_how_to_continue
from expt.status import RunResult
from expt.sweep_env import SweepTrial
from expt.values import is_integer, is_number

from ._compose import Composer

log = logging.getLogger(__name__)


def shown(overrides: Sequence[str]) -> List[str]:
    """A job's overrides as its launch line shows them: Hydra's own settings left out, those added with ``+`` or
    ``++`` too (a sweeper's ``hydra.job.env_set`` for each trial, which Hydra's ``filter_overrides`` keeps)."""
    return [o for o in overrides if not split_override(o)[0].startswith("hydra.")]


class LauncherConfigError(ConfigError, CompactHydraException):
    """A setting of the launcher that cannot run: Hydra prints the paragraph alone (``HYDRA_FULL_ERROR=1`` the
    traceback). Raised in ``setup``: Hydra wraps an error raised while it instantiates the launcher in its own."""


def _check_settings(max_population: Any, memory_fraction: Any) -> None:
    if not is_integer(max_population) or max_population < 1:
        raise LauncherConfigError(
            f"Error in the config: hydra.launcher.max_population={max_population!r} is not allowed: an integer >= 1 "
            "(the most trials trained together; 1 runs every trial alone)")
    if not is_number(memory_fraction) or not 0 < memory_fraction <= 1:
        raise LauncherConfigError(
            f"Error in the config: hydra.launcher.memory_fraction={memory_fraction!r} is not allowed: a number in "
            "(0, 1] (the share of a GPU's free memory a population may plan to use)")


def _configure_log(config: DictConfig, context: HydraContext) -> None:
    """The launcher's own logging, as Hydra's basic launcher sets it (with its execution whitelist, where
    this Hydra has one)."""
    whitelist = getattr(context, "execution_whitelist", None)
    if whitelist is None:
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    else:
        configure_log(config.hydra.hydra_logging, config.hydra.verbose, execution_whitelist=whitelist)


class _Pickler(pickle.Pickler):
    """Pickles a config with one node of it (``left_out``) as a reference, which :class:`_Unpickler` restores as an
    empty config."""

    def __init__(self, file: io.BytesIO, left_out: Any):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.left_out = left_out

    def persistent_id(self, obj: Any) -> Optional[str]:
        return "left out" if obj is self.left_out else None


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> DictConfig:
        return DictConfig({})


def _without_hydra(config: DictConfig) -> DictConfig:
    """The task config ``run_job`` makes (a deep copy of ``config`` less its ``hydra`` node), without copying that node:
    ``config`` pickled with its ``hydra`` node left out and unpickled, and the placeholder in its place deleted.
    Hydra's node is most of a job's config, and unpickling restores the nodes in one pass where a deep copy walks
    them in Python: about a third of the time of a deep copy that skips the node. A config holding a value pickle
    cannot take is deep-copied, its ``hydra`` node found already copied (to the placeholder)."""
    hydra, buffer = config._get_node("hydra"), io.BytesIO()
    try:
        _Pickler(buffer, hydra).dump(config)
    except Exception:  # an instance of a class defined inside a function, say
        task_cfg = copy.deepcopy(config, memo={id(hydra): DictConfig({})})
    else:
        task_cfg = _Unpickler(io.BytesIO(buffer.getvalue())).load()
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def _hydra_view(config: DictConfig) -> DictConfig:
    """What ``HydraConfig.set_config(config)`` makes HydraConfig hold: a config of the ``hydra`` node alone, whose
    parent is ``config`` (so that its interpolations resolve) and which is read-only, as Hydra sets it; but holding
    ``config``'s own node rather than a copy of it. A job's view and its config then agree by construction, and the
    copy (about 4 ms a member) is saved. ``tests/test_compose.py`` compares it with Hydra's view."""
    hydra = config._get_node("hydra")
    OmegaConf.set_readonly(hydra, True)
    view = DictConfig({})
    with flag_override(view, "no_deepcopy_set_nodes", True):
        view.hydra = hydra
    hydra._set_parent(config)
    return view


class _Job:
    """One job of the batch: its composed config, task config and run directory."""

    def __init__(self, num: int, config: DictConfig):
        self.num, self.config = num, config
        self.task_cfg: Optional[DictConfig] = None
        self.output_dir: Optional[Path] = None
        self.key: Optional[str] = None
        self.hydra_view: Optional[DictConfig] = None  # HydraConfig's view of config (its own hydra node), by _prepare
        self.env: Dict[str, str] = {}  # hydra.job.env_set, resolved once its output directory is set


@dataclass
class _Trained:
    """A population member's task, as its job's bookkeeping calls it: it hands back what the population gave it."""

    result: Any  # the member's metrics dict, or the exception that stopped it (or the population)

    def __call__(self, _cfg: DictConfig) -> RunResult:
        if isinstance(self.result, BaseException):  # as a lone job raises it: bad input or a full disk as its paragraph
            error = self.result if os.environ.get("HYDRA_FULL_ERROR") == "1" else as_trial_error(self.result)
            if error is self.result:
                raise error
            raise error from self.result
        return RunResult(self.result)


class PopulationLauncherImpl:
    def __init__(self, max_population: Any, memory_fraction: Any) -> None:
        self.max_population, self.memory_fraction = max_population, memory_fraction  # checked in setup
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        self._current: Optional[int] = None  # the job whose member's own work is running, inside a population
        self.composer: Optional[Composer] = None
        self._loaded: Optional[tuple[str, Any]] = None  # the data config last loaded, and its splits

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        _check_settings(self.max_population, self.memory_fraction)
        self.max_population, self.memory_fraction = int(self.max_population), float(self.memory_fraction)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.composer = Composer(hydra_context.config_loader, config)

    # ------------------------------------------------------------------ composing the jobs
    def _compose(self, overrides: Sequence[str], num: int) -> _Job:
        assert self.composer is not None
        sweep_config = self.composer(overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = str(num)
            sweep_config.hydra.job.num = num
        return _Job(num, sweep_config)

    def _prepare(self, job: _Job) -> None:
        """The job's output directory and task config, as ``run_job`` will compute them; its group key, or None for
        a job that trains alone. The job's own Hydra config is HydraConfig's throughout (``${hydra:...}`` values)."""
        from expt.config import validate
        from expt.population import can_join, group_key
        from expt.presets import apply_preset_choices
        from expt.requeue import own_checkpoint

        config = job.config
        job.hydra_view = _hydra_view(config)  # the member's view: made once, here
        with self._hydra_config_of(job):
            output_dir = os.path.abspath(Path(str(OmegaConf.select(config, "hydra.sweep.dir")),
                                              str(OmegaConf.select(config, "hydra.sweep.subdir"))))
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = output_dir  # the view's too: it holds the same node
            job.output_dir = Path(output_dir)
            # what a sweep tells the trial (read into a SweepTrial here, at the edge)
            env = OmegaConf.to_container(config.hydra.job.env_set, resolve=True) or {}
            job.env = {str(k): str(v) for k, v in env.items()}
            job.task_cfg = _without_hydra(config)
            try:
                apply_preset_choices(job.task_cfg, list(config.hydra.overrides.task),
                                     str(OmegaConf.select(config, "hydra.job.config_name") or "config"),
                                     config.hydra.runtime.choices)  # as the task function does for a lone run
                validate(job.task_cfg)
                job.key = group_key(job.task_cfg)
            except Exception as exc:  # the lone run reports what is wrong with the config
                log.debug("job %d trains alone: %s", job.num, exc)
                job.key = None
                return
            if job.key is None:
                log.info("job %d trains alone: %s", job.num, can_join(job.task_cfg))
            elif own_checkpoint(output_dir, {**os.environ, **job.env}) is not None:  # as its run would (expt.requeue)
                log.info("job %d trains alone: it resumes from the checkpoint an earlier attempt left in %s",
                         job.num, output_dir)
                job.key = None

    def _member_context(self, job: _Job):
        """The job's Hydra config and environment, around a member's own work inside the population."""

        @contextlib.contextmanager
        def context():
            saved_member, self._current = self._current, job.num
            try:
                with self._hydra_config_of(job), env_override(job.env):
                    yield
            finally:
                self._current = saved_member

        return context

    def _data(self, task_cfg: DictConfig) -> Any:
        """The splits ``task_cfg.data`` describes, loaded once for the groups and rounds that share that config
        (loading Fashion-MNIST takes about a second of CPU); the last one is kept, so one dataset at a time."""
        from expt.data import load as load_data

        key = repr(OmegaConf.to_container(task_cfg.data, resolve=True))
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None  # the last splits go before the next are loaded
            self._loaded = (key, load_data(task_cfg.data))
        return self._loaded[1]

    # ------------------------------------------------------------------ grouping
    def _cap(self, job: _Job) -> int:
        """max_population, lowered to what fits in the GPU's free memory for this job's members."""
        cap = self.max_population
        if cap == 1 or job.task_cfg is None:
            return cap
        from expt.build import resolve_device

        device = resolve_device(str(job.task_cfg.trainer.device))
        if device.type != "cuda":
            return cap
        import torch

        from expt.population import member_bytes

        free, _ = torch.cuda.mem_get_info(device)
        need = member_bytes(job.task_cfg, self._data(job.task_cfg))
        fits = max(1, int(free * self.memory_fraction // max(need, 1)))
        if fits < cap:
            log.info("population of job %d capped at %d members: about %.1f MiB each, %.0f MiB free on %s",
                     job.num, fits, need / 2 ** 20, free / 2 ** 20, device)
        return min(cap, fits)

    def _group(self, jobs: List[_Job]) -> List[List[_Job]]:
        by_key: Dict[str, List[_Job]] = {}
        order: List[List[_Job]] = []
        for job in jobs:
            if job.key is None:
                order.append([job])
                continue
            if job.key not in by_key:
                by_key[job.key] = []
                order.append(by_key[job.key])
            by_key[job.key].append(job)
        self._say_why_alone([group[0] for group in order if len(group) == 1 and group[0].key is not None], order)
        groups: List[List[_Job]] = []
        for group in order:
            if len(group) == 1:
                groups.append(group)
                continue
            cap = self._cap(group[0])
            parts = math.ceil(len(group) / cap)
            size = math.ceil(len(group) / parts)  # even parts: 70 with a cap of 64 gives 35 + 35
            groups += [group[i:i + size] for i in range(0, len(group), size)]
        return groups

    def _say_why_alone(self, alone: List[_Job], order: List[List[_Job]]) -> None:
        """One line for the jobs that could train in a population but share their config with no other job of the
        batch (a search over model widths, say): which they are, and where the first of them differs from another
        job."""
        if not alone:
            return
        from expt.population import MAY_DIFFER, first_difference, shared

        job = alone[0]
        # another job that could join a population (one whose config failed its checks trains alone to report them)
        other = next((group[0] for group in order if group[0] is not job and group[0].key is not None), None)
        if other is None:  # the batch's only such job
            return
        parts = []
        for each in (job, other):
            with self._member_context(each)():  # ${hydra:...} values as the job's own
                parts.append(shared(each.task_cfg))
        differs = first_difference(parts[0], parts[1]) or "a value"
        nums = ", ".join(str(j.num) for j in alone)
        log.info("job%s %s train%s alone: %s no other job of this batch to share a population with (job %d differs "
                 "from job %d at %s; %s)", "s" if len(alone) > 1 else "", nums, "" if len(alone) > 1 else "s",
                 "each has" if len(alone) > 1 else "it has", job.num, other.num, differs, MAY_DIFFER)

    # ------------------------------------------------------------------ running
    def _run(self, job: _Job, task_function: TaskFunction) -> JobReturn:
        assert self.hydra_context is not None
        return run_job(hydra_context=self.hydra_context, task_function=task_function, config=job.config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def _member_return(self, job: _Job, result: Any) -> JobReturn:
        """A trained member's ``JobReturn``, with the bookkeeping Hydra's ``run_job`` does for a job after its task
        (working directory, logging, environment, callbacks and fields; its files were written as its group
        started, :meth:`_write_job_files`; ``tests/test_population.py`` compares them with the basic launcher's),
        from the task config and the Hydra view :meth:`_prepare` made."""
        assert self.hydra_context is not None and job.hydra_view is not None and job.output_dir is not None
        assert job.task_cfg is not None
        config, callbacks = job.config, self.hydra_context.callbacks
        task: TaskFunction = _Trained(result)
        around = getattr(self.task_function, "around", None)  # a task function that records its trial as the job
        if callable(around):  # ends (the coarse-to-fine sweeper's) records the member's, from what it trained
            task = around(task)
        old_cwd = os.getcwd()
        chdir = job.hydra_view.hydra.job.chdir
        if chdir is None:
            chdir = not version.base_at_least("1.2")
        with self._hydra_config_of(job):
            try:
                ret = JobReturn()
                ret.cfg, ret.hydra_cfg = job.task_cfg, job.hydra_view
                ret.overrides = OmegaConf.to_container(config.hydra.overrides.task)
                job.output_dir.mkdir(parents=True, exist_ok=True)
                if chdir:
                    os.chdir(job.output_dir)
                ret.working_dir = str(job.output_dir) if chdir else os.getcwd()
                configure_log(config.hydra.job_logging, config.hydra.verbose)
                with env_override(job.env):
                    callbacks.on_job_start(config=config, task_function=task)
                    try:
                        ret.return_value, ret.status = task(job.task_cfg), JobStatus.COMPLETED
                    except Exception as exc:
                        ret.return_value, ret.status = exc, JobStatus.FAILED
                ret.task_name = JobRuntime.instance().get("name")
                for handler in logging.getLogger().handlers:
                    handler.flush()
                callbacks.on_job_end(config=config, job_return=ret)
                return ret
            finally:
                if chdir:
                    os.chdir(old_cwd)

    @staticmethod
    def _write_job_files(job: _Job) -> None:
        """The job's ``.hydra/`` files (its config, Hydra config and overrides), as ``run_job`` writes them before
        the task starts: a member's directory says what it trains from the start, as a lone job's does."""
        assert job.output_dir is not None and job.task_cfg is not None and job.hydra_view is not None
        config = job.config
        if config.hydra.output_subdir is None:
            return
        out = job.output_dir / str(config.hydra.output_subdir)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("config.yaml", to_yaml(job.task_cfg)), ("hydra.yaml", to_yaml(job.hydra_view)),
                           ("overrides.yaml", to_yaml(config.hydra.overrides.task))):
            (out / name).write_text(text, encoding="utf-8")

    def _train_group(self, group: List[_Job]) -> Dict[int, Any]:
        """Train the group as one population: each job's metrics (or the error that stopped it) by job number. A job
        left out of the answer runs alone (its population could not start).

        Each member's directory is locked first, as a lone run's is (:func:`expt.files.only_writer`), and held while
        the group trains: a job whose directory another process trains in (the same sweep started twice) fails
        alone with that process's pid, before anything of its directory is written, and the others train on."""
        with contextlib.ExitStack() as locks:
            busy: Dict[int, Any] = {}
            members: List[_Job] = []
            for job in group:
                assert job.output_dir is not None
                job.output_dir.mkdir(parents=True, exist_ok=True)
                try:
                    locks.enter_context(only_writer(job.output_dir, StorageError, "hydra.sweep.dir"))
                except StorageError as exc:  # as a lone job's: the message alone, and the other jobs go on
                    log.error("job %d: %s This job stops; the other jobs go on.", job.num, described(exc))
                    busy[job.num] = TrialStorageError(str(exc))
                else:
                    members.append(job)
            return {**busy, **(self._train_members(members) if members else {})}

    def _train_members(self, group: List[_Job]) -> Dict[int, Any]:
        """:meth:`_train_group`'s training of the jobs whose directories it holds; empty if they could not start."""
        from expt.population import Population

        assert all(job.output_dir is not None and job.task_cfg is not None for job in group)
        log.info("population of %d: jobs %s", len(group), ", ".join(str(job.num) for job in group))
        before = {job.num: set(job.output_dir.rglob("*")) for job in group}
        for job in group:
            self._write_job_files(job)  # a member's only: run_job writes a lone job's
        started: Optional[Exception] = None  # why the population could not start
        failed: Optional[Exception] = None  # the error that stopped it
        results: Dict[int, Any] = {}
        with self._job_logging(group):
            try:
                population = Population([job.task_cfg for job in group], [job.output_dir for job in group],
                                        [self._member_context(job) for job in group],
                                        [SweepTrial.read(job.env) for job in group], self._data(group[0].task_cfg),
                                        validated=True,  # by _prepare: a job that fails trains alone
                                        names=[f"job {job.num}" for job in group], keys=[job.key for job in group])
            except Exception as exc:
                started = exc
            else:
                try:
                    results = {job.num: m for job, m in zip(group, population.fit())}
                except Exception as exc:  # every member of the group failed with it
                    failed = exc
        nums = ", ".join(str(job.num) for job in group)
        if started is not None:
            log.warning("the population of jobs %s could not start (%s: %s): they run one at a time",
                        nums, type(started).__name__, started)
            for job in group:  # what the attempt wrote (events, checkpoints), so each lone run starts clean
                for path in sorted(set(job.output_dir.rglob("*")) - before[job.num], reverse=True):
                    if path.suffix != ".log":
                        with contextlib.suppress(OSError):
                            path.rmdir() if path.is_dir() else path.unlink()
            return {}
        if failed is not None:
            log.error("the population of jobs %s failed: %s: %s", nums, type(failed).__name__, failed)
            results = {job.num: failed for job in group}
        return results

    @contextlib.contextmanager
    def _job_logging(self, group: List[_Job]):
        """Logging while a group trains, as its jobs' ``hydra.job_logging`` sets it up for a lone job (the basic
        launcher configures it as each job starts): the first job's console, and each member's own copy of every
        file the root logger writes for its job (``<job name>.log`` by default), with its own lines and the
        population's. The launcher's own logging is back afterwards."""
        assert self.config is not None and self.hydra_context is not None
        first, root = group[0], logging.getLogger()
        with self._hydra_config_of(first):
            configure_log(first.config.hydra.job_logging, first.config.hydra.verbose)
            names = {path: name for name, path in self._log_files(first).items()}
        added: List[logging.Handler] = []
        try:
            for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
                name = names.get(handler.baseFilename)
                if name is None:  # a file of no job in particular: kept as it is
                    continue
                jobs_of: Dict[str, List[int]] = {}  # each file this handler writes for the jobs, and whose it is
                for job in group:
                    with self._hydra_config_of(job):
                        path = self._log_files(job).get(name)
                    if path is not None:
                        jobs_of.setdefault(path, []).append(job.num)
                if list(jobs_of) == [handler.baseFilename]:  # one file for every job: kept as it is
                    continue
                root.removeHandler(handler)
                handler.close()
                for path, nums in jobs_of.items():
                    own = logging.FileHandler(path, mode=handler.mode, encoding=handler.encoding)
                    own.setFormatter(handler.formatter)
                    own.setLevel(handler.level)
                    own.addFilter(lambda _record, nums=tuple(nums): self._current is None or self._current in nums)
                    root.addHandler(own)
                    added.append(own)
            yield
        finally:
            for handler in added:
                root.removeHandler(handler)
                handler.close()
            _configure_log(self.config, self.hydra_context)

    @staticmethod
    def _log_files(job: _Job) -> Dict[str, str]:
        """The files ``job``'s ``hydra.job_logging`` writes: each handler's name and absolute ``filename``."""
        node = OmegaConf.select(job.config, "hydra.job_logging.handlers")
        handlers = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {}
        assert isinstance(handlers, dict)
        return {str(name): os.path.abspath(str(spec["filename"])) for name, spec in handlers.items()
                if isinstance(spec, dict) and "filename" in spec}

    @staticmethod
    @contextlib.contextmanager
    def _hydra_config_of(job: _Job):
        """HydraConfig's view is the job's own (``${hydra:...}`` resolves in it)."""
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().cfg = job.hydra_view
        try:
            yield
        finally:
            if saved is not None:
                HydraConfig.instance().cfg = saved

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        _configure_log(self.config, self.hydra_context)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs locally, compatible ones as populations of at most %d",
                 len(job_overrides), self.max_population)
        jobs = []
        for idx, overrides in enumerate(job_overrides):
            num = initial_job_idx + idx
            log.info("\t#%d : %s", num, " ".join(shown(overrides)))
            job = self._compose(overrides, num)
            self._prepare(job)
            jobs.append(job)
        groups = self._group(jobs)
        returns: Dict[int, JobReturn] = {}
        for group in groups:
            try:
                results = self._train_group(group) if len(group) > 1 else {}
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each member kept its run; say how the sweep goes on
                tell_how_to_continue(str(self.config.hydra.sweep.dir),
                                     [job.output_dir for job in group if job.output_dir is not None])
                raise
            for job in group:
                returns[job.num] = (self._member_return(job, results[job.num]) if job.num in results
                                    else self._run(job, self.task_function))
                _configure_log(self.config, self.hydra_context)
        return [returns[job.num] for job in jobs]
