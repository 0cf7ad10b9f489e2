"""``python -m expt mode=sanity``: the recipe's four sanity checks on the composed model and data.

1. **Loss at init**: with regularization off, the initial data loss is about log C.
2. **Regularization raises the loss**: adding an L2 penalty of ``sanity.reg_strength`` increases it.
3. **Gradient check**: back-propagated gradients agree with centred differences in float64.
4. **Overfit a tiny set**: the real trainer reaches 100% training accuracy on a few samples.

Checks 1 to 3 and the guard before training are in :mod:`expt.checks` (re-exported here);
this module adds check 4, which trains through :func:`expt.run.train`, and the command:
:func:`run_checks` prints the report and writes it as ``sanity.json`` into the run directory.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from expt.build import build, has_batchnorm
from expt.config import on_schema, validate
from expt.checks import (
    ACCEPTABLE_REL_ERROR,
    GOOD_REL_ERROR,
    GUARD_SAMPLES,
    WRONG_REL_ERROR,
    Check,
    SanityError,
    gradient_check,
    guard,
    loss_at_init,
    number_text,
    regularization_raises_loss,
    relative_error,
    sample,
)
from expt.errors import not_written
from expt.predict import data_loss, logits
from expt.regularization import Regularizer
from expt.run import default_run_dir, train
from expt.status import COMPLETED, SANITY_DIR, SANITY_FILE, write_json

log = logging.getLogger("expt.sanity")  # the sanity checks speak under one name (expt.checks's too)

# The checks' public names, kept where callers have found them since before expt.checks existed.
__all__ = [
    "ACCEPTABLE_REL_ERROR", "GOOD_REL_ERROR", "GUARD_SAMPLES", "WRONG_REL_ERROR", "Check", "SanityError",
    "data_loss", "format_report", "gradient_check", "guard", "logits", "loss_at_init", "overfit_small_set",
    "regularization_raises_loss", "relative_error", "run_checks", "sample", "with_values",
]

# ----------------------------------------------------------------------------- 4. overfit a tiny set
# The overfit run's schedule: the configured learning rate, held for every epoch.
CONSTANT_SCHEDULE: dict[str, Any] = {
    "_target_": "torch.optim.lr_scheduler.ConstantLR", "_partial_": True, "factor": 1.0,
}
# "Regularization off" for the checks: no penalty, dropout or max-norm (batch norm is architecture).
REGULARIZATION_OFF: dict[str, Any] = {
    "regularization.l1": 0.0,
    "regularization.l2": 0.0,
    "regularization.dropout": 0.0,
    "regularization.max_norm": None,
}


def with_values(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with the dotted keys in ``values`` set (added where the node lacks them)."""
    result = copy.deepcopy(cfg)
    for key, value in values.items():
        OmegaConf.update(result, key, value, merge=False, force_add=True)
    return result


def overfit_small_set(
    cfg: DictConfig, run_dir: Path, samples: int, epochs: int, batch_size: int, num_classes: Optional[int] = None,
    available: Optional[int] = None,
) -> Check:
    """Check 4: the real trainer reaches 100% training accuracy on the first ``samples`` training samples.

    Runs :func:`expt.run.train` on the composed config with ``data.subset=samples``,
    ``trainer.epochs=epochs``, ``trainer.batch_size=batch_size``, regularization off (no
    L1/L2, dropout, max-norm or augmentation; batch norm, part of the architecture, stays as configured),
    training accuracy measured on all of the subset, and the run written to ``run_dir``.
    The model, init and optimizer (its learning rate included) are the configured ones; the
    learning rate is held constant, because a schedule is sized in epochs of a full run (the
    default halves the rate every 5 epochs, 64 times smaller by epoch 30 here). A failure
    means the model or the update rule cannot fit even a tiny set. The check passes when the
    training accuracy reaches 1 in some epoch; validation accuracy is reported and stays low.
    The dashboard's optional diagnostics (histograms, filter images, graph...) are switched off:
    they never change the numbers, and in 30 epochs of 2 steps they took most of the time.
    ``num_classes``, when given, lets the hint blame the init for a loss that starts far above log C;
    ``available``, the training split's size, when known, takes the place of a larger ``samples`` (said once, naming
    sanity.overfit_samples).
    """
    asked = samples
    if available is not None and samples > available:
        log.warning("sanity.overfit_samples=%d is more than the %d training samples: the overfit check uses all %d.",
                    samples, available, available)
        samples = available
    diagnostics_off = {f"dashboard.{key}": False for key, value in cfg.get("dashboard", {}).items()
                       if isinstance(value, bool)}
    overfit = with_values(cfg, {
        **REGULARIZATION_OFF,
        **diagnostics_off,
        "augmentation": {},  # the tiny set as it is: augmentation is for generalizing, not fitting
        "data.subset": samples,
        "trainer.epochs": epochs,
        "trainer.batch_size": batch_size,
        "trainer.train_eval_samples": samples,
        "trainer.resume": None,
        "schedule": CONSTANT_SCHEDULE,
        "sanity.before_train": "false",
        "mode": "train",
    })
    started = time.perf_counter()
    metrics = train(overfit, run_dir=run_dir)
    seconds = time.perf_counter() - started
    history = metrics["history"]
    samples = metrics["train_samples"]  # fewer where the training split has fewer
    train_accs = [row["train_acc"] for row in history if row.get("epoch", 0) > 0]
    best = max(train_accs) if train_accs else 0.0
    reached = next((row["epoch"] for row in history if row.get("epoch", 0) > 0 and row["train_acc"] >= 1.0), None)
    last = history[-1] if history else {}
    passed = metrics["status"] == COMPLETED and reached is not None
    hint = ""
    if metrics["status"] != COMPLETED:
        hint = (f"training {metrics['status']} after {metrics['epochs_completed']} epochs "
                "(loss NaN or above trainer.divergence_factor x the initial loss): learning rate too large?")
    elif not passed:
        first, final = metrics["initial_loss"], metrics["final_train_loss"]
        hint = f"the model cannot fit {samples} samples (loss {number_text(first)} -> {number_text(final)}): "
        if num_classes is not None and first > 3 * math.log(num_classes):
            hint += "it starts far above log C, so fix the init first (see loss at init)"
        else:
            hint += (f"learning rate too small (optimizer.lr={cfg.optimizer.get('lr')})? a bug in the model "
                     "or the update? (sanity.overfit_epochs gives it more epochs)")
    return Check(
        name="overfit_small_set",
        title=f"overfit {samples} samples" + (f" (all the training split holds of the {asked} asked for)"
                                               if samples < asked else ""),
        passed=passed,
        measured=best,
        expected=f"train accuracy 100% within {epochs} epochs (batch {batch_size}, regularization off)",
        summary=(f"train accuracy {best:.1%}" + (f" at epoch {reached}" if reached else "")
                 + (f", val {last['val_acc']:.1%}" if "val_acc" in last else "") + f", {seconds:.1f}s"),
        hint=hint,
        details={"best_train_acc": best, "reached_epoch": reached, "final_train_acc": last.get("train_acc"),
                 "final_val_acc": last.get("val_acc"), "initial_loss": metrics["initial_loss"],
                 "final_train_loss": metrics["final_train_loss"], "status": metrics["status"],
                 "samples": samples, "epochs": epochs, "batch_size": batch_size, "seconds": seconds,
                 "run_dir": str(run_dir)},
    )


# ----------------------------------------------------------------------------- the command
def run_checks(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the four checks on the composed model and data; print the report and write ``sanity.json``.

    Checks 1 to 3 use one experiment built with regularization off (same seed, so the same
    initial weights as the configured run): check 1 its data loss on up to
    ``trainer.train_eval_samples`` training samples, check 2 the same samples with an L2
    penalty of ``sanity.reg_strength`` added, check 3 ``sanity.gradcheck_samples`` of them
    (3 at least when the model has batch norm) with the configured L1/L2 penalty in the
    loss, which is the function training minimizes. Check 4 trains a fresh model in
    ``<run_dir>/sanity/overfit``. Returns the report: ``passed`` and one entry per check.
    """
    started = time.perf_counter()
    cfg = on_schema(cfg)  # a config loaded from a file, or a dict, as compose types it
    validate(cfg)  # the configured run (its regularization too), before any data is read
    exp = build(with_values(cfg, REGULARIZATION_OFF))
    settings = cfg.sanity
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.trainer.seed)
    d = exp.data
    x, y = sample(d.x_train, d.y_train, min(len(d.x_train), cfg.trainer.train_eval_samples), seed)
    strength = float(settings.reg_strength)
    grad_samples = max(settings.gradcheck_samples, 3) if has_batchnorm(exp.model) else settings.gradcheck_samples
    configured = cfg.regularization
    setup = {
        "model": type(exp.model).__name__,
        "activation": str(cfg.activation.get("_target_", "")).rsplit(".", 1)[-1],
        "init": str(cfg.init.get("_target_", "")).rsplit(".", 1)[-1],
        "data": str(cfg.data.get("name", cfg.data.get("_target_", ""))),
        "device": str(exp.device),
        "num_classes": d.num_classes,
    }
    checks = []
    for check in (  # each logged as it ends: the overfit check trains for minutes on a large dataset's CPU run
        lambda: loss_at_init(exp.model, x, y, d.num_classes, float(settings.loss_tolerance)),
        lambda: regularization_raises_loss(exp.model, x, y, Regularizer(exp.model, l2=strength).penalty, strength),
        lambda: gradient_check(
            exp.model, x[:grad_samples], y[:grad_samples],
            penalty_fn=lambda m: Regularizer(m, l1=configured.l1, l2=configured.l2).penalty(),
            entries=settings.gradcheck_entries, seed=seed,
        ),
        lambda: overfit_small_set(cfg, run_dir / SANITY_DIR / "overfit", settings.overfit_samples,
                                  settings.overfit_epochs, settings.overfit_batch_size, num_classes=d.num_classes,
                                  available=len(d.x_train)),
    ):
        checks.append(check())
        log.info("Sanity check %d of 4: %s  %s  %s", len(checks), "PASS" if checks[-1].passed else "FAIL",
                 checks[-1].title, checks[-1].summary)
    report = {
        "passed": all(c.passed for c in checks),
        "checks": [c.to_dict() for c in checks],
        "setup": setup,
        "seconds": time.perf_counter() - started,
        "path": str(run_dir / SANITY_FILE),
    }
    try:
        write_json(run_dir / SANITY_FILE, report)
    except OSError as exc:  # the checks are done: their report is printed, then what could not be kept
        report["path"] = None
        print(format_report(report))
        raise not_written(run_dir / SANITY_FILE, exc) from exc
    print(format_report(report))
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one line per check (verdict, measured, expected), per-tensor errors, hints."""
    lines = [_setup_line(report["setup"])]
    for c in report["checks"]:
        lines += _check_lines(c)
    lines.append(_summary_line(report))
    return "\n".join(lines)


def _setup_line(s: dict[str, Any]) -> str:
    return f"Sanity checks: {s['model']} ({s['activation']}, {s['init']} init) on {s['data']}, {s['device']}"


def _check_lines(c: dict[str, Any]) -> list[str]:
    """One check's lines of the report."""
    verdict = "PASS" if c["passed"] else "FAIL"
    lines = [f"  {verdict}  {c['title']:<27} {c['summary']}", f"        {'':<27} expected {c['expected']}"]
    if c["name"] == "gradient_check":
        for name, t in c["details"]["tensors"].items():
            shape = "x".join(map(str, t["shape"]))
            redrawn = t["skipped_kink"] + t["skipped_tiny"]
            if t["max_rel_error"] is None:
                outcome = (f"unchecked: {t['skipped_kink']} tries crossed a kink, "
                           f"{t['skipped_tiny']} had a gradient too small to measure")
            else:
                outcome = (f"max rel. error {t['max_rel_error']:.1e}  {t['grade']:<10} {t['checked']} entries"
                           + (f" ({redrawn} redrawn)" if redrawn else ""))
            lines.append(f"          {name:<20} {shape:<12} {outcome}")
    if c["hint"]:
        lines.append(f"        hint: {c['hint']}")
    return lines


def _summary_line(report: dict[str, Any]) -> str:
    passed = sum(c["passed"] for c in report["checks"])
    kept = f"report: {report['path']}" if report["path"] else "the report above is not saved"
    return f"  {passed} of {len(report['checks'])} checks passed in {report['seconds']:.1f}s; {kept}"


