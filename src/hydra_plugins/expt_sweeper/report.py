"""What a sweep tells as it runs and when it ends: each round's line in the log, the chosen trial and the
table of the top trials, ``search_summary.yaml`` (rewritten after every round) and the pictures."""

import logging
from pathlib import Path
from typing import Dict, List

import yaml
from omegaconf import DictConfig, OmegaConf

from expt.files import replacing
from expt.overrides import split_override
from expt.search import PINPOINT_ROUND, CoarseToFineSearch, NumericParam, TrialRecord, TrialSpec

log = logging.getLogger(__name__)

SUMMARY_FILE = "search_summary.yaml"
TABLE_ROWS = 10


def log_round(search: CoarseToFineSearch, n: int, specs: List[TrialSpec]) -> None:
    """The line that starts round ``n``: its trials, jobs, overrides and ranges, and the values held."""
    extra = " ".join(search.history[-1].overrides) or "no extra overrides"
    if n == PINPOINT_ROUND:
        param = search.settings.pinpoint.param
        rates = ", ".join(str(spec.values[param]) for spec in specs)
        log.info("pinpoint: %s (%s) with %s; %s at %s", _trials(len(specs)), _jobs(specs), extra, param, rates)
        return
    names = search.stage_params[search.settings.stage_of(n)]
    ranges = ", ".join(f"{name} in {search.space[name]}" for name in names)
    held = " ".join(f"{k}={search.space[k].format(v)}" for k, v in search.held.items())
    log.info("round %d/%d (stage %s): %s (%s) with %s; %s%s", n, len(search.settings.rounds), search.stage_name(n),
             _trials(len(specs)), _jobs(specs), extra, ranges, f"; holding {held}" if held else "")


def _trials(n: int) -> str:
    return f"{n} trial{'s' if n != 1 else ''}"


def _jobs(specs: List[TrialSpec]) -> str:
    return f"job {specs[0].job}" if len(specs) == 1 else f"jobs {specs[0].job}-{specs[-1].job}"


def log_chosen(search: CoarseToFineSearch, best: TrialRecord) -> None:
    """The table of the top trials, the chosen one (``best``) and how far apart the top two are."""
    log.info("top trials (%s):\n%s", search.settings.direction, search.table(TABLE_ROWS))
    tie = (f", {search.settings.tie_break} {best.tie_value:.4g}"
           if search.settings.tie_break and best.tie_value is not None else "")
    test = f"; its test accuracy {100 * best.test_acc:.2f}%" if best.test_acc is not None else ""
    log.info("chosen: job %d (round %d), objective %.4g%s%s: %s", best.job, best.round,
             best.objective, tie, test, " ".join(best.overrides))
    separation = search.separation()
    if separation:
        log.info("%s", separation)


def write_summary(search: CoarseToFineSearch, sweep_dir: Path) -> None:
    """``search_summary.yaml`` in ``sweep_dir``, replaced whole (never half written)."""
    with replacing(sweep_dir / SUMMARY_FILE) as f:
        f.write(yaml.safe_dump(search.summary(), sort_keys=False).encode("utf-8"))


def plot(search: CoarseToFineSearch, sweep_dir: Path, config: DictConfig) -> List[Path]:
    """The objective against each searched parameter and over the trials (expt.dashboard.plot_sweep)."""
    from expt.dashboard import plot_sweep

    records = [{"round": r.round, "job": r.job, "values": dict(r.values), "objective": r.objective,
                "status": r.status, "val_loss": r.tie_value, "val_samples": r.val_samples, "epochs": r.epochs}
               for r in search.all_records()]
    log_params = {name: isinstance(param, NumericParam) and param.log
                  for name, param in search.space.items()}
    moves = [{"round": m.after_round + 1, "param": m.param, "old": list(m.old), "new": list(m.new)}
             for m in search.moves]
    return plot_sweep(records, log_params, sweep_dir, moves, direction=search.settings.direction,
                      metric="val_acc", round_epochs=_round_epochs(search, config),
                      tie_samples=search.settings.tie_samples, tie_break=search.settings.tie_break or "val_loss")


def _round_epochs(search: CoarseToFineSearch, config: DictConfig) -> Dict[int, int]:
    """Epochs each round trains, from its ``trainer.epochs`` override or the config's value."""
    default = OmegaConf.select(config, "trainer.epochs", default=None)
    out: Dict[int, int] = {}
    for h in search.history:
        epochs = default
        for item in h.overrides:
            key, value = split_override(item)
            if key == "trainer.epochs":
                epochs = value
        if epochs is not None and str(epochs).isdigit():
            out[h.round] = int(epochs)
    return out
