"""``python -m expt [overrides]``: compose conf/ with Hydra, then train (or run the sanity checks)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any, Callable, Optional

try:
    import hydra
    from omegaconf import DictConfig
    from omegaconf.errors import InterpolationResolutionError

    from expt.presets import apply_preset_choices  # also registers the typed schema with Hydra's ConfigStore
    from expt.errors import (ConfigError, StorageError, Terminated, interrupts_after, on_sigterm,
                             termination_handled)
    from expt.overrides import shell_override, split_override
except KeyboardInterrupt:  # Ctrl-C while the libraries load (a second or two): nothing has started
    print("Interrupted.", file=sys.stderr)
    raise SystemExit(130) from None

log = logging.getLogger("expt")


def run(cfg: DictConfig) -> float:
    """The task function: returns the validation metric that sweepers optimise.

    A training run returns it as an :class:`expt.status.RunResult`: a float carrying the run's metrics, which
    the coarse-to-fine sweeper records from Hydra's ``JobReturn``.
    """
    with interrupts_after():  # PyTorch's first import: a Ctrl-C then stops the run once torch has loaded
        from expt.run import in_sweep, train
        from expt.status import RunResult
    if cfg.mode == "sanity":
        from expt.sanity import run_checks  # its libraries are loaded by now

        report = run_checks(cfg)
        if not report["passed"]:
            if in_sweep():  # this job fails alone
                from expt.job_errors import SanityChecksFailed

                failed = [c["title"] for c in report["checks"] if not c["passed"]]
                raise SanityChecksFailed(f"{len(failed)} of {len(report['checks'])} sanity checks failed "
                                         f"({', '.join(failed)}); the report: {report['path']}")
            raise SystemExit(1)
        return 1.0
    return RunResult(train(cfg))


@hydra.main(version_base="1.3", config_path="pkg://expt.conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.RUN:
            warn_of_unused_plugins(hydra_cfg.runtime.choices)
        if apply_preset_choices(cfg, list(hydra_cfg.overrides.task), hydra_cfg.job.config_name or "config",
                                hydra_cfg.runtime.choices) and hydra_cfg.output_subdir is not None:
            # .hydra/config.yaml, which Hydra wrote before the task started, says what the run trains
            from pathlib import Path

            from expt.config import to_yaml

            saved = Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir) / "config.yaml"
            saved.write_text(to_yaml(cfg), encoding="utf-8")
        try:
            return run(cfg)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trainer has kept what it measured
            say_how_to_resume(hydra_cfg)
            raise
    except (ConfigError, InterpolationResolutionError) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(exc, InterpolationResolutionError):  # ${trainer.nope} in an override or a config file
            from expt.errors import reason

            exc = ConfigError(f"an interpolation in the overrides or the config cannot be resolved: {reason(exc)}.")
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # This job trains nothing and the others go on; the sweeper records it as failed. Hydra prints
            # a TrialConfigError as its message alone (a plain multirun, at its end, then exits 1).
            from expt.errors import described
            from expt.job_errors import as_trial_error

            log.error("%s This job trains nothing; the other jobs go on.", described(exc))
            raise as_trial_error(exc) from exc
        from expt.output_dir import restore_earlier_record

        restore_earlier_record(HydraConfig.get().runtime.output_dir)  # the run there keeps its own record
        report_error(f"Error in the config: {exc}\nSet HYDRA_FULL_ERROR=1 for a complete stack trace.")
        raise SystemExit(1)
    except StorageError as exc:  # the disk, not the run: what could not be written, and what was kept
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # as a ConfigError: the message alone; the sweep goes on
            from expt.errors import described
            from expt.job_errors import as_trial_error

            log.error("%s This job stops; the other jobs go on.", described(exc))
            raise as_trial_error(exc) from exc
        report_error(f"Error: {exc}\nSet HYDRA_FULL_ERROR=1 for a complete stack trace.")
        raise SystemExit(1)


def warn_of_unused_plugins(choices: Any) -> None:
    """One warning where a single run (no ``-m``) chooses a sweeper or a launcher other than Hydra's basic ones, which
    only a multirun uses: ``python -m expt hydra/sweeper=coarse_to_fine`` trains the config's one run, not a search."""
    unused = [f"hydra/{group}={choices.get(f'hydra/{group}')}" for group in ("sweeper", "launcher")
              if choices.get(f"hydra/{group}") not in (None, "basic")]
    if unused:
        log.warning("%s only take%s effect in a multirun: this command trains one run with the config's values; to "
                    "sweep, add -m (--multirun).", " and ".join(unused), "" if len(unused) > 1 else "s")


def report_error(text: str) -> None:
    """A run's error paragraph on stderr, and in its log file (``expt.log``) too: what stopped a run stays with it.
    The console gets it once (Hydra's console handler is left out); a log file the disk refuses is passed over
    in silence (logging would print its own traceback)."""
    print(text, file=sys.stderr)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, text, None, None)
    quiet, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
    finally:
        logging.raiseExceptions = quiet


def say_how_to_resume(hydra_cfg) -> None:
    """After a stopped run whose directory holds a checkpoint: the command that continues it where it is (its
    overrides, that directory, trainer.resume); for a job of a multirun that leaves work to continue (its checkpoint,
    or the trials a coarse-to-fine sweep recorded: :func:`expt.requeue.sweep_to_continue`), how to continue the
    sweep."""
    import shlex
    from pathlib import Path

    from hydra.types import RunMode

    from expt.requeue import stopped_run_here, tell_how_to_continue

    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # a relative sweep directory is the command's, not the job's (hydra.job.chdir=true runs the job in its own)
        tell_how_to_continue(Path(hydra_cfg.runtime.cwd) / str(hydra_cfg.sweep.dir), [run_dir], str(hydra_cfg.sweep.dir))
        return
    if not stopped_run_here(run_dir):
        return
    flags = [f"--config-dir={source.path if source.schema == 'file' else f'{source.schema}://{source.path}'}"
             for source in hydra_cfg.runtime.config_sources if source.provider == "command-line"]
    if hydra_cfg.job.config_name not in (None, "config"):
        flags.append(f"--config-name={hydra_cfg.job.config_name}")
    kept = [o for o in hydra_cfg.overrides.task if split_override(o)[0] != "trainer.resume"]
    words = [*map(shlex.quote, [*flags, *kept]), *(shell_override(key, str(run_dir))
                                                  for key in ("hydra.run.dir", "trainer.resume"))]
    print(f"To resume in the same directory: python -m expt {' '.join(words)}", file=sys.stderr)


def command_line(arguments: list[str]) -> Optional[argparse.Namespace]:
    """The arguments as Hydra's own parser reads them (its flags, the overrides); None where it cannot say."""
    try:
        from hydra._internal.utils import get_args_parser

        return get_args_parser().parse_known_args(arguments)[0]
    except BaseException:  # moved in a later Hydra, or argparse exits on what it cannot parse: Hydra reports it
        return None


def stop_on_misspelt_keys(args: Optional[argparse.Namespace]) -> None:
    """Stop with one paragraph on an override Hydra would reject with a less useful message: a key a typed
    section or the option a group composes lacks (``trainer.epoch=3``, ``model.num_filter=8``: its keys and
    the nearest one), an option a list-valued group lacks (:func:`expt.config.unknown_override`), a
    sweeper key spelt as before the search had stages (Hydra would assert), a key the coarse_to_fine
    sweeper lacks, or one the population or basic launcher lacks (Hydra would not list their keys)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or args is None or args.shell_completion:
        return
    from expt.config import unknown_override

    own_config = bool(args.config_dir or args.config_name or args.config_path)
    pairs = [split_override(a) for a in args.overrides]
    problem = unknown_override(args.overrides, own_config)
    if problem is None and any(a.startswith("hydra.sweeper.rounds.") for a in args.overrides):
        from hydra_plugins.expt_sweeper.config import old_round_key

        problem = old_round_key(args.overrides)
    if problem is None and any(a.startswith("hydra.sweeper.stages.") for a in args.overrides):
        from hydra_plugins.expt_sweeper.config import missing_stage

        problem = missing_stage(args.overrides)
    if problem is None and "hydra/sweeper=coarse_to_fine" in args.overrides:
        from hydra_plugins.expt_sweeper.config import unknown_setting

        problem = _first_setting_problem(pairs, "hydra.sweeper.",
                                         lambda key, value: unknown_setting(key, value, text=True))
    launchers = [value for key, value in pairs if key == "hydra/launcher"]
    # a config of one's own, or a preset found through hydra.searchpath, may choose the launcher
    searched = any(key == "hydra.searchpath" for key, _ in pairs)
    if problem is None and (launchers or not (own_config or searched)):
        from hydra_plugins.expt_population.population_launcher import unknown_setting as unknown_launcher_setting

        launcher = launchers[-1] if launchers else None
        problem = _first_setting_problem(pairs, "hydra.launcher.",
                                         lambda key, value: unknown_launcher_setting(key, value, launcher))
    if problem is not None:
        print(f"Error in the config: {problem}\nSet HYDRA_FULL_ERROR=1 for a complete stack trace.", file=sys.stderr)
        raise SystemExit(1)


def _first_setting_problem(pairs: list[tuple[str, str]], prefix: str,
                           problem: Callable[[str, str], Optional[str]]) -> Optional[str]:
    """The first paragraph ``problem(key, value)`` gives for an override ``<prefix><key>=<value>`` of ``pairs`` (each
    override's key and value), or None: a plugin's settings (``hydra.sweeper.``, ``hydra.launcher.``) checked."""
    for key, value in pairs:
        if key.startswith(prefix):
            found = problem(key[len(prefix):], value)
            if found is not None:
                return found
    return None


def stop_on_two_commands(args: Optional[argparse.Namespace]) -> None:
    """Stop with one line where the arguments ask Hydra for two things at once (``-m --cfg job``), which Hydra
    refuses with a traceback; it runs one of them a call."""
    if args is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    given = [flag for flag, on in (("--run", args.run), ("--multirun", args.multirun), (f"--cfg {args.cfg}", args.cfg),
                                   (f"--info {args.info}", args.info is not None),
                                   ("--shell-completion", args.shell_completion)) if on]
    if len(given) > 1:
        hint = (f" To see the config of one job of a sweep, give --cfg {args.cfg} its overrides with one value each."
                if args.multirun and args.cfg else "")
        print(f"Error: {' and '.join(given)} cannot be combined: python -m expt does one of --run, --multirun, --cfg, "
              f"--info and --shell-completion a call.{hint}", file=sys.stderr)
        raise SystemExit(2)


def show_preset_config(args: Optional[argparse.Namespace]) -> bool:
    """``--cfg job`` with a preset (``experiment=...``): print the config the run trains, the preset's settings of a
    group the command chooses another option of dropped (:func:`expt.presets.apply_preset_choices`), as the run's
    ``.hydra/config.yaml`` holds it; Hydra's own ``--cfg job`` prints its composition before that rule. True when
    printed; False leaves ``--cfg`` to Hydra (no preset, ``--resolve``, a config of one's own, an override that
    does not compose: Hydra says what is wrong)."""
    if (args is None or args.cfg != "job" or args.resolve or args.help or args.hydra_help or args.multirun
            or args.config_dir or args.config_name or args.config_path or args.info or args.experimental_rerun
            or not any(o.lstrip("+").startswith("experiment=") for o in args.overrides)):
        return False
    from omegaconf import OmegaConf

    from expt import compose

    package = None if args.package == "_global_" else args.package  # _global_: the whole config, as Hydra reads it
    try:
        cfg = compose(args.overrides)
        node = OmegaConf.select(cfg, package, throw_on_missing=False) if package else cfg
    except Exception:
        return False
    if not isinstance(node, DictConfig):  # a package that is not a node (a value, or absent): Hydra's own way
        return False
    print((f"# @package {package}\n" if package else "") + OmegaConf.to_yaml(node), end="")
    return True


def main_reporting_help_errors(args: Optional[argparse.Namespace]) -> None:
    """``main()``; with ``--help`` or ``--hydra-help``, an override Hydra cannot compose is reported as a run
    reports it (its message, no traceback; exit 1), which Hydra does for a run but not for its help."""
    if args is None or not (args.help or args.hydra_help):
        main()
        return
    try:
        from hydra._internal.utils import run_and_report
    except ImportError:  # pragma: no cover - moved in a later Hydra: its help reports as it does
        main()
        return
    run_and_report(main)


def cli() -> None:
    """``python -m expt`` and the ``expt`` command: the arguments checked, then :func:`main`. Ctrl-C exits 130 and
    SIGTERM 143, each after the run has kept what it measured and said how to resume."""
    arguments = command_line(sys.argv[1:])
    stop_on_two_commands(arguments)
    stop_on_misspelt_keys(arguments)
    if show_preset_config(arguments):
        return
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        main_reporting_help_errors(arguments)
    except KeyboardInterrupt as exc:  # the trainer has said what it kept and how to resume
        termination_handled()
        terminated = isinstance(exc, Terminated)
        print("Terminated." if terminated else "Interrupted.", file=sys.stderr)
        raise SystemExit(143 if terminated else 130) from None


if __name__ == "__main__":
    cli()
