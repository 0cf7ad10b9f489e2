"""expt trials under Ray Tune: each trial composes expt's config and calls the same training function.

    pip install -e . "ray[tune]"
    python examples/ray_tune.py --samples 8 --storage /shared/tune -- model=mlp trainer.epochs=3

Everything after ``--`` is a list of expt overrides that every trial gets; the searched keys
(``optimizer.lr``, ``regularization.l2``) come from Tune's search space below, and each trial adds
them as overrides, so a trial runs exactly what ``python -m expt <overrides>`` would. The run
directory of a trial (``metrics.json``, checkpoints, TensorBoard events) is ``<trial dir>/run``.
A trial started again in the same directory (``tune.Tuner.restore(..., resume_unfinished=True)``,
or Tune retrying a failed trial) continues from its ``checkpoints/last.pt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import expt
from expt import checkpoint

LAST = Path(checkpoint.DIR) / checkpoint.LAST


def overrides_for(params: Mapping[str, Any], base: Sequence[str]) -> list[str]:
    """The command-line overrides of one trial: the fixed ones, then Tune's values."""
    return [*base, *(f"{key}={value}" for key, value in sorted(params.items()))]


def run_trial(params: Mapping[str, Any], base: Sequence[str], run_dir: Path) -> dict[str, Any]:
    """One trial, as ``python -m expt`` runs it; resumes from ``run_dir``'s last.pt when there is one."""
    overrides = overrides_for(params, base)
    if (run_dir / LAST).is_file():
        overrides.append(f"trainer.resume={run_dir}")
    metrics = expt.train(expt.compose(overrides), run_dir=run_dir)
    return {"objective": metrics["objective"], "best_val_acc": metrics["best_val_acc"],
            "status": metrics["status"], "run_dir": str(run_dir)}


def trainable(params: dict[str, Any], base: Sequence[str] = ()) -> dict[str, Any]:
    """A Tune function trainable: its return value is the trial's final result."""
    from ray import tune

    return run_trial(params, base, Path(tune.get_context().get_trial_dir()) / "run")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    base = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="trials to run")
    parser.add_argument("--storage", default="ray_results", help="where Tune keeps the trials (shared between nodes)")
    parser.add_argument("--name", default="expt", help="the experiment's folder under --storage")
    parser.add_argument("--gpus", type=float, default=0, help="GPUs each trial reserves (1: one GPU a trial)")
    parser.add_argument("--cpus", type=float, default=1, help="CPUs each trial reserves")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(own)

    import ray
    from ray import tune

    ray.init(ignore_reinit_error=True, include_dashboard=False)
    space = {"optimizer.lr": tune.loguniform(1e-4, 1e-1), "regularization.l2": tune.loguniform(1e-6, 1e-2)}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, base=base), {"cpu": args.cpus, "gpu": args.gpus}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="objective", mode="max", num_samples=args.samples,
                                    search_alg=tune.search.BasicVariantGenerator(random_state=args.seed)),
        run_config=tune.RunConfig(name=args.name, storage_path=str(Path(args.storage).absolute()), verbose=0),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(json.dumps({"best": {"config": best.config, **best.metrics_dataframe.iloc[-1][
        ["objective", "best_val_acc", "status", "run_dir"]].to_dict()},
        "trials": [r.metrics.get("objective") for r in results]}, default=str))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
