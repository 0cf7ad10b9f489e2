"""The picture of a finished sweep: the objective against each searched parameter (:func:`plot_sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from torch.utils.tensorboard import SummaryWriter

from expt.config import is_finite_number
from expt.dashboard.writer import use_c_checksums


def plot_sweep(
    records: list[dict],
    log_params: dict[str, bool],
    sweep_dir: Path,
    edge_moves: Optional[list[dict]] = None,
    direction: str = "maximize",
) -> list[Path]:
    """One picture per searched parameter: the objective against the parameter's sampled value.

    ``records``: one dict per trial with ``round`` (int), ``values`` (parameter -> sampled value),
    ``objective`` (float, or None for a trial that gave none) and ``status``. ``log_params``
    names the searched parameters, True for those sampled on a log scale (drawn on a log x
    axis). ``edge_moves``: the search range changes between rounds, each with ``round``,
    ``param`` and the ``old`` and ``new`` ``[lo, hi]``; the new range is shaded in the round's
    colour and the old edges drawn dashed. Points are coloured by round; trials without an
    objective are crosses along the bottom; the best trial (:func:`best_trial`: the largest objective,
    or the smallest with ``direction="minimize"``) is starred.

    Saves ``sweep_<param>.png`` in ``sweep_dir`` and writes the same pictures as images
    (tag ``sweep/<param>``) to ``<sweep_dir>/sweep_summary``, a run of its own in TensorBoard.
    Returns the PNG paths.
    """
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    moves = list(edge_moves or [])
    rounds = sorted({int(r.get("round", 0)) for r in records} | {int(m.get("round", 0)) for m in moves})
    palette = matplotlib.colormaps["viridis" if len(rounds) > 10 else "tab10"]

    def colour(round_: int) -> Any:
        i = rounds.index(round_) if round_ in rounds else 0
        return palette(i / max(1, len(rounds) - 1)) if len(rounds) > 10 else palette(i % 10)

    best = best_trial(records, direction)
    paths: list[Path] = []
    use_c_checksums()
    writer = SummaryWriter(log_dir=str(sweep_dir / "sweep_summary"))
    try:
        for param, is_log in log_params.items():
            fig = Figure(figsize=(10, 4.8), dpi=100)
            canvas = FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            for move in (m for m in moves if m.get("param") == param):
                c = colour(int(move.get("round", 0)))
                new_lo, new_hi = move["new"]
                ax.axvspan(new_lo, new_hi, color=c, alpha=0.10, lw=0)
                for old_edge, new_edge in zip(move["old"], move["new"]):
                    if old_edge != new_edge:
                        ax.axvline(old_edge, color=c, ls="--", lw=1)
                        ax.annotate("", xy=(new_edge, 0.97), xytext=(old_edge, 0.97),
                                    xycoords=("data", "axes fraction"),
                                    arrowprops={"arrowstyle": "->", "color": c, "lw": 1.2})
            any_bad = False
            for round_ in rounds:
                trials = [r for r in records if int(r.get("round", 0)) == round_ and param in r.get("values", {})]
                good = [r for r in trials if is_finite_number(r.get("objective"))]
                bad = [r for r in trials if not is_finite_number(r.get("objective"))]
                moved = [m for m in moves if m.get("param") == param and int(m.get("round", 0)) == round_]
                label = f"round {round_} ({len(trials)} trials)"
                if moved:
                    label += "; range " + ", ".join(f"{_fmt(m['old'])} -> {_fmt(m['new'])}" for m in moved)
                if good:
                    ax.scatter([_num(r["values"][param]) for r in good], [r["objective"] for r in good],
                               color=colour(round_), s=28, alpha=0.85, label=label, zorder=3)
                if bad:
                    ax.scatter([_num(r["values"][param]) for r in bad], [0.02] * len(bad),
                               transform=ax.get_xaxis_transform(), marker="x", color=colour(round_), s=30,
                               label=None if good else label, zorder=3)
                    any_bad = True
                if not good and not bad and moved:
                    ax.plot([], [], color=colour(round_), label=label)
            if best is not None and param in best.get("values", {}):
                ax.scatter([_num(best["values"][param])], [best["objective"]], marker="*", s=220,
                           facecolor="none", edgecolor="crimson", lw=1.5, zorder=4, label="best")
            if is_log and _all_positive(records, moves, param):
                ax.set_xscale("log")
            ax.set_xlabel(param + (" (log scale)" if ax.get_xscale() == "log" else ""))
            ax.set_ylabel("objective")
            ax.set_title(f"Sweep: objective vs {param}")
            ax.grid(True, alpha=0.3)
            if any_bad:
                ax.scatter([], [], marker="x", color="grey", label="no objective (failed or diverged)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
            fig.tight_layout()
            path = sweep_dir / f"sweep_{_safe(param)}.png"
            fig.savefig(path)
            canvas.draw()
            rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
            writer.add_image(f"sweep/{param}", rgb, 0, dataformats="HWC")
            paths.append(path)
    finally:
        writer.close()
    return paths


def best_trial(records: list[dict], direction: str = "maximize") -> Optional[dict]:
    """The record :func:`plot_sweep` stars: the largest finite ``objective`` (``direction="maximize"``)
    or the smallest (``"minimize"``), the first one on a tie; None when no record has one."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', not {direction!r}")
    scored = [r for r in records if is_finite_number(r.get("objective"))]
    if not scored:
        return None
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda r: r["objective"])


def _num(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _all_positive(records: list[dict], moves: list[dict], param: str) -> bool:
    values = [r["values"][param] for r in records if param in r.get("values", {})]
    values += [v for m in moves if m.get("param") == param for v in (*m["old"], *m["new"])]
    return bool(values) and all(is_finite_number(v) and v > 0 for v in values)


def _fmt(bounds: Any) -> str:
    return "[" + ", ".join(f"{b:.3g}" if is_finite_number(b) else str(b) for b in bounds) + "]"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
