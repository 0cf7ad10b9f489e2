"""The pictures of a finished sweep (:func:`plot_sweep`): the metric against each searched parameter, and
the optimization history (the best so far against the trial number).

Each picture is drawn by a function of its own; what they share is a class each: the rounds (a colour and a
legend entry each), the chosen trial and its ties (the star and the rings), and the pictures' trials and
destination (a PNG beside the sweep, an image in its TensorBoard run).
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any, Optional

from torch.utils.tensorboard import SummaryWriter

from expt.dashboard.writer import use_c_checksums
from expt.search import TrialRecord, chosen_and_tied
from expt.status import COMPLETED, DIVERGED, FAILED, INTERRUPTED, PRUNED
from expt.values import is_finite_number, is_integer, is_number

# What the metric's name means on an axis.
METRIC_NAMES = {
    "val_acc": "best validation accuracy",
    "val_loss": "validation loss",
    "test_acc": "test accuracy",
}
# TensorBoard shows an image 350 pixels wide in its card, whatever its own size: the picture it gets is
# drawn at that width (4.375 inches at 80 dpi) with 9-point text (10 pixels), so it reads without opening
# it. The PNG written beside the sweep is the same drawing at twice the resolution. The legend goes
# below the axes, one entry a line, and the figure grows with it.
WIDTH, AXES_HEIGHT, LEGEND_LINE = 4.375, 3.3, 0.17  # inches
LEGEND_CHARS = 70  # a legend entry's line at most; narrower where that still runs past the picture's right edge
TB_DPI, PNG_DPI, FONT = 80, 160, 9
# How each status is drawn: (marker, face colour or None for the round's colour, label, on the plot or in
# the strip along the bottom). A pruned trial stopped early but kept its last score; the others have none.
STATUS_STYLE = {
    PRUNED: ("o", "none", "pruned (stopped early; its last score)", "plot"),
    DIVERGED: ("x", "crimson", "diverged (no score)", "strip"),
    FAILED: ("s", "black", "failed (error, no score)", "strip"),
    INTERRUPTED: ("v", "grey", "interrupted (no score)", "strip"),
}

def plot_sweep(
    records: list[dict],
    log_params: dict[str, bool],
    sweep_dir: Path,
    edge_moves: Optional[list[dict]] = None,
    direction: str = "maximize",
    metric: str = "objective",
    round_epochs: Optional[dict[int, int]] = None,
    tie_samples: int = 0,
    tie_break: str = "val_loss",
) -> list[Path]:
    """One picture per searched parameter (the metric against the parameter's sampled value), and the history.

    ``records``: one dict per trial with ``round`` (int), ``job`` (int, optional: the trial number),
    ``values`` (parameter -> sampled value), ``objective`` (float, or None), ``status`` and optionally
    ``val_loss`` (breaks ties: lower is better), ``val_samples`` (the size of the validation split the
    objective was measured on) and ``epochs``. ``log_params``
    names the searched parameters, True for those sampled on a log scale (drawn on a log x axis).
    ``edge_moves``: the search range changes between rounds, each with ``round``, ``param`` and the
    ``old`` and ``new`` ``[lo, hi]``; the new range is shaded in the round's colour and the old edges
    drawn dashed. ``metric`` names the objective on the axes (``val_acc``: the best validation
    accuracy); ``round_epochs`` (round -> epochs each trial trained) goes into the legend; ``tie_samples``
    is the sweep's tie rule (objectives within that many validation samples tie), ``tie_break`` the name of the
    metric a record's ``val_loss`` holds (the sweeper's ``tie_break``: ``best_val_loss`` by default).

    Points are coloured by round. Completed trials are dots, pruned ones hollow circles at their last
    score; diverged, failed and interrupted trials, which have no score, are marked apart in a strip
    along the bottom. The trial the search chooses (:func:`best_trials`, the search's own ranking rule) is
    starred; trials tied with it are ringed and the legend says how the tie was broken. The history's "best
    so far" is the objective of the trial the search would choose from the trials up to that one.

    Saves ``sweep_<param>.png`` and ``sweep_history.png`` in ``sweep_dir`` and writes the same pictures as
    images (tags ``sweep/<param>``, ``sweep/history``) to ``<sweep_dir>/sweep_summary``, a run of its own
    in TensorBoard. Returns the PNG paths, the history last.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', not {direction!r}")
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    moves = list(edge_moves or [])
    rounds = _Rounds(records, moves, round_epochs or {})
    chosen = _Chosen(best_trials(records, direction, tie_samples), tie_samples, tie_break)
    metric_name = METRIC_NAMES.get(metric, metric)
    y_label = f"{metric_name} ({metric})" if metric in METRIC_NAMES else metric
    paths: list[Path] = []
    use_c_checksums()
    writer = SummaryWriter(log_dir=str(sweep_dir / "sweep_summary"))
    # a choice's options are categories on purpose, numbers among them: matplotlib's note on each is noise in
    # the sweep's log
    categories = logging.getLogger("matplotlib.category")
    level = categories.level
    categories.setLevel(max(level, logging.WARNING))
    try:
        pictures = _Pictures(records, rounds, chosen, y_label, sweep_dir, writer)
        for param, is_log in log_params.items():
            paths.append(_parameter_picture(pictures, param, is_log, moves, metric_name))
        paths.append(_history_picture(pictures, direction, tie_samples))
    finally:
        categories.setLevel(level)
        writer.close()
    return paths


class _Rounds:
    """The rounds of a sweep as the pictures draw them: each round's colour and its entry in the legend."""

    def __init__(self, records: list[dict], moves: list[dict], round_epochs: dict[int, int]) -> None:
        import matplotlib

        self.records = records
        self.epochs = {int(k): v for k, v in round_epochs.items()}
        self.numbers = sorted({int(r.get("round", 0)) for r in records} | {int(m.get("round", 0)) for m in moves})
        self.palette = matplotlib.colormaps["viridis" if len(self.numbers) > 10 else "tab10"]

    def colour(self, round_: int) -> Any:
        i = self.numbers.index(round_) if round_ in self.numbers else 0
        return self.palette(i / max(1, len(self.numbers) - 1)) if len(self.numbers) > 10 else self.palette(i % 10)

    def label(self, round_: int, n: int) -> str:
        """``round 2: 8 trials of 4 epochs``: the epochs from ``round_epochs``, else from the round's records."""
        name = "pinpoint (round 0)" if round_ == 0 else f"round {round_}"
        ep = self.epochs.get(round_)
        if ep is None:
            ep = next((r.get("epochs") for r in self.records if int(r.get("round", 0)) == round_ and r.get("epochs")),
                      None)
        return (f"{name}: {n} trial{'s' if n != 1 else ''}"
                + (f" of {ep} epoch{'s' if ep != 1 else ''}" if ep is not None else ""))


class _Chosen:
    """The trial the search chooses, starred, and the trials tied with it, ringed (:func:`best_trials`)."""

    def __init__(self, tied: list[dict], tie_samples: int, tie_break: str = "val_loss") -> None:
        self.tied = tied
        self.best = tied[0] if tied else None
        self.tie_samples = tie_samples
        self.tie_break = tie_break

    def label(self, ringed: Optional[int] = None) -> str:
        """The star's legend entry: the best score, and how a tie was broken. ``ringed``: how many of the tied
        trials the picture draws (a parameter's picture leaves out the trials that did not sample it: a later stage's,
        where it is held)."""
        best, tied, tie_samples = self.best, self.tied, self.tie_samples
        assert best is not None
        text = f"best: {_fmt_value(best['objective'])}"
        if len(tied) > 1:
            others = len(tied) - 1
            ringed = others if ringed is None else ringed
            within = f"; within {tie_samples} val sample{'s' if tie_samples != 1 else ''}" if tie_samples else ""
            shown = ("ringed" if ringed == others else f"{ringed} ringed; the others did not sample this parameter" if ringed
                     else "not drawn: they did not sample this parameter")
            text += f", tied with {others} other{'s' if others > 1 else ''} ({shown}{within})"
            text += f"; lower {self.tie_break} ranks first" if is_finite_number(best.get("val_loss")) else \
                "; the higher score, then the earlier trial"
        return text

    def draw(self, ax: Any, x_of: Any, subset: list[dict]) -> None:
        """The star on the chosen trial and a ring on each trial tied with it, those of ``subset``."""
        best = self.best
        if best is None:
            return
        stars = [r for r in self.tied if r in subset]
        others = [r for r in stars if r is not best]
        if best in subset:
            ax.scatter([x_of(best)], [best["objective"]], marker="*", s=240, facecolor="none",
                       edgecolor="crimson", lw=1.5, zorder=4, label=self.label(len(others)))
        if others:  # where the chosen trial lacks this parameter, the rings say what they are themselves
            ax.scatter([x_of(r) for r in others], [r["objective"] for r in others], marker="o", s=170,
                       facecolor="none", edgecolor="crimson", lw=1.0, ls="--", zorder=4,
                       label=None if best in subset else f"tied with the chosen trial (job {best['job']}, "
                                                         f"{_fmt_value(best['objective'])}), which did not sample this parameter")


class _Pictures:
    """What every picture of a sweep shares: the trials, their rounds, the chosen trial, the metric's axis label;
    and where each picture goes: a PNG in the sweep's folder and an image in its TensorBoard run."""

    def __init__(self, records: list[dict], rounds: _Rounds, chosen: _Chosen, y_label: str, sweep_dir: Path,
                 writer: SummaryWriter) -> None:
        self.records, self.rounds, self.chosen, self.y_label = records, rounds, chosen, y_label
        self.sweep_dir, self.writer = sweep_dir, writer

    def figure(self) -> tuple[Any, Any, Any]:
        """A new figure at TensorBoard's card width, its canvas and its one axes."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(WIDTH, AXES_HEIGHT), dpi=TB_DPI)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.tick_params(labelsize=FONT)
        return fig, canvas, ax

    def save(self, fig: Any, canvas: Any, ax: Any, name: str, tag: str) -> Path:
        """The legend below the axes (the figure grows with it), then ``name`` as a PNG and ``tag`` as an image."""
        import numpy as np

        ax.grid(True, alpha=0.3)
        handles, entries = ax.get_legend_handles_labels()
        for chars in range(LEGEND_CHARS, 20, -6):  # narrower lines until every entry fits the picture's width
            for old in fig.legends:
                old.remove()
            labels = [textwrap.fill(label, chars, subsequent_indent="  ") for label in entries]
            legend = LEGEND_LINE * sum(label.count("\n") + 1 for label in labels) + (0.1 if handles else 0.0)
            fig.set_size_inches(WIDTH, AXES_HEIGHT + legend)
            if handles:
                fig.legend(handles, labels, fontsize=FONT - 1, loc="lower left", bbox_to_anchor=(0.01, 0.0),
                           ncol=1, frameon=False, handletextpad=0.3, borderaxespad=0.2)
            fig.tight_layout(rect=(0, legend / (AXES_HEIGHT + legend), 1, 1))
            canvas.draw()  # at TensorBoard's resolution, where text is widest against the picture
            if all(t.get_window_extent().x1 <= fig.bbox.x1 for lg in fig.legends for t in lg.get_texts()):
                break
        # the last draw is TensorBoard's image: taken before the PNG's own draw at twice the resolution
        rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        path = self.sweep_dir / name
        fig.savefig(path, dpi=PNG_DPI)
        self.writer.add_image(tag, rgb, 0, dataformats="HWC")
        return path

    def draw_trials(self, ax: Any, x_of: Any, subset: list[dict]) -> None:
        """The trials of ``subset`` by round and status, and the chosen one; ``x_of(record)`` is the x value."""
        marked: set[str] = set()
        for round_ in self.rounds.numbers:
            trials = [r for r in subset if int(r.get("round", 0)) == round_]
            marked |= _draw_round(ax, x_of, trials, round_, self.rounds)
        _status_legend(ax, marked)
        if not any(is_finite_number(r.get("objective")) for r in subset):
            ax.text(0.5, 0.5, "no trial gave a score", transform=ax.transAxes, ha="center", va="center",
                    fontsize=FONT + 1, color="dimgrey")
            ax.set_yticks([])  # no score, no scale
        self.chosen.draw(ax, x_of, subset)


def _draw_round(ax: Any, x_of: Any, trials: list[dict], round_: int, rounds: _Rounds) -> set[str]:
    """One round's trials: scored ones as dots in its colour, the others as :data:`STATUS_STYLE` marks them (and
    a grey diamond in the strip for a status it does not know); returns the statuses it marked."""
    marked = set()
    colour = rounds.colour(round_)
    done = [r for r in trials if _status(r) == COMPLETED and is_finite_number(r.get("objective"))]
    if done or trials:
        ax.scatter([x_of(r) for r in done], [r["objective"] for r in done], color=colour, s=30,
                   alpha=0.9, label=rounds.label(round_, len(trials)), zorder=3)
    for status, (marker, face, _, where) in STATUS_STYLE.items():
        some = [r for r in trials if _status(r) == status]
        if where == "plot":
            some = [r for r in some if is_finite_number(r.get("objective"))]
        if not some:
            continue
        if where == "plot":
            ax.scatter([x_of(r) for r in some], [r["objective"] for r in some], marker=marker,
                       facecolor="none", edgecolor=colour, s=36, lw=1.2, zorder=3)
        else:
            _strip(ax, [x_of(r) for r in some], marker=marker, color=face, s=34, zorder=3)
        marked.add(status)
    other = [r for r in trials if _status(r) not in STATUS_STYLE and r not in done]
    if other:  # a completed trial without a score, or a status this picture does not know
        _strip(ax, [x_of(r) for r in other], marker="d", color="grey", s=30, zorder=3)
        marked.add("other")
    return marked


def _status_legend(ax: Any, marked: set[str]) -> None:
    """A legend entry for each status marked on the axes, in :data:`STATUS_STYLE`'s order, the unknown last."""
    for status in STATUS_STYLE:
        if status in marked:
            marker, face, label, where = STATUS_STYLE[status]
            if where == "plot":
                ax.scatter([], [], marker=marker, facecolor="none", edgecolor="grey", label=label)
            else:
                ax.scatter([], [], marker=marker, color=face, label=label)
    if "other" in marked:
        ax.scatter([], [], marker="d", color="grey", label="no score")


def _parameter_picture(pictures: _Pictures, param: str, is_log: bool, moves: list[dict], metric_name: str) -> Path:
    """The metric against the sampled values of ``param``, its range's edge moves behind the trials."""
    fig, canvas, ax = pictures.figure()
    for move in (m for m in moves if m.get("param") == param):
        _draw_edge_move(ax, move, pictures.rounds.colour(int(move.get("round", 0))))
    subset = [r for r in pictures.records if param in r.get("values", {})]
    pictures.draw_trials(ax, lambda r: _num(r["values"][param]), subset)
    if is_log and _all_positive(pictures.records, moves, param):
        _log_axis(ax)
    ax.set_xlabel(param + (" (log scale)" if ax.get_xscale() == "log" else ""), fontsize=FONT)
    ax.set_ylabel(pictures.y_label, fontsize=FONT)
    ax.set_title(f"{metric_name} vs {param}", fontsize=FONT + 1)
    return pictures.save(fig, canvas, ax, f"sweep_{_safe(param)}.png", f"sweep/{param}")


def _log_axis(ax: Any) -> None:
    """A log-scaled x axis whose ticks are plain numbers (0.002, 50, 200) at 1, 2 and 5 times a power of ten, or at
    the powers alone over a wide range: matplotlib's own labels of a range near one decade ran into each other
    ('3x10^1 4x10^1 6x10^1')."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    subs = (1.0,) if high / low > 10 ** 2.5 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw_edge_move(ax: Any, move: dict, colour: Any) -> None:
    """The new range shaded in the round's colour, each old edge that moved dashed with an arrow to the new one."""
    new_lo, new_hi = move["new"]
    ax.axvspan(new_lo, new_hi, color=colour, alpha=0.10, lw=0)
    for old_edge, new_edge in zip(move["old"], move["new"]):
        if old_edge != new_edge:
            ax.axvline(old_edge, color=colour, ls="--", lw=1)
            ax.annotate("", xy=(new_edge, 0.97), xytext=(old_edge, 0.97),
                        xycoords=("data", "axes fraction"),
                        arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2})
    ax.plot([], [], color=colour, ls="--", lw=1,
            label=f"round {move.get('round')}: range {_fmt(move['old'])} -> {_fmt(move['new'])}")


def _history_picture(pictures: _Pictures, direction: str, tie_samples: int) -> Path:
    """The optimization history: every trial's score against its trial number, and the best so far (the objective
    of the trial the search would choose from the trials up to there)."""
    from matplotlib.ticker import MaxNLocator

    records = pictures.records
    order = sorted(range(len(records)), key=lambda i: (records[i].get("job", i), i))
    number = {id(records[i]): n for n, i in enumerate(order)}
    x_of = (lambda r: r["job"]) if all(is_integer(r.get("job")) for r in records) else (lambda r: number[id(r)])
    fig, canvas, ax = pictures.figure()
    pictures.draw_trials(ax, x_of, list(records))
    xs, ys = [], []
    for n, i in enumerate(order):
        chosen = best_trial([records[j] for j in order[: n + 1]], direction, tie_samples)
        if chosen is not None:
            xs.append(x_of(records[i]))
            ys.append(chosen["objective"])
    if xs:
        ax.step(xs, ys, where="post", color="black", lw=1.2, label="best so far", zorder=2)
    starts: dict[int, Any] = {}
    for i in order:
        starts.setdefault(int(records[i].get("round", 0)), x_of(records[i]))
    for round_, x in sorted(starts.items())[1:]:
        ax.axvline(x - 0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("trial (job number)", fontsize=FONT)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # job numbers are whole
    ax.set_ylabel(pictures.y_label, fontsize=FONT)
    ax.set_title("Optimization history: best so far by trial", fontsize=FONT + 1)
    return pictures.save(fig, canvas, ax, "sweep_history.png", "sweep/history")



def _strip(ax: Any, xs: list, **style: Any) -> None:
    """Trials without a score, marked along the bottom of the axes at their x values.

    Their y is in axes units, which leaves the data limits alone; the x values are added to them
    so that the axis spans these trials too (and a log axis has positive limits when no trial scored).
    """
    ax.scatter(xs, [0.03] * len(xs), transform=ax.get_xaxis_transform(), **style)
    # where the axis puts them: a number as it is, a choice's option at its category's place (an option no scored
    # trial had is a new category, outside the limits the scores set)
    placed = [ax.xaxis.convert_units(x) for x in xs if not isinstance(x, bool)]
    positions = [float(x) for x in placed if is_finite_number(x)]
    if positions:
        ax.update_datalim([(x, 0.0) for x in positions], updatex=True, updatey=False)
        ax.autoscale_view(scaley=False)


def _status(record: dict) -> str:
    return str(record.get("status") or COMPLETED)


def best_trials(records: list[dict], direction: str = "maximize", tie_samples: int = 0) -> list[dict]:
    """The trial the search chooses, then the completed trials tied with it: :func:`expt.search.chosen_and_tied`,
    the rule the sweeper ranks by, applied to the pictures' records.

    Objectives within ``tie_samples`` validation samples (``val_samples``) of the best tie; among tied trials
    a lower ``val_loss`` ranks first (a trial without one last), then the higher objective, then the earlier
    ``job`` (the order of ``records`` where there is none). Empty when no completed record has an objective.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', not {direction!r}")
    trials = [_trial(r, i) for i, r in enumerate(records)]
    by_id = {id(t): r for t, r in zip(trials, records)}
    return [by_id[id(t)] for t in chosen_and_tied(trials, direction, tie_samples)]


def best_trial(records: list[dict], direction: str = "maximize", tie_samples: int = 0) -> Optional[dict]:
    """The record :func:`plot_sweep` stars: the first of :func:`best_trials`; None when there is none."""
    tied = best_trials(records, direction, tie_samples)
    return tied[0] if tied else None


def _trial(record: dict, index: int) -> TrialRecord:
    """A picture's record as the search's :class:`TrialRecord` (what its ranking reads)."""
    def number(key: str) -> Optional[float]:
        return float(record[key]) if is_finite_number(record.get(key)) else None

    job = record.get("job")
    samples = record.get("val_samples")
    return TrialRecord(round=int(record.get("round", 0)), job=job if is_integer(job) else index, overrides=[],
                       values=dict(record.get("values", {})), objective=number("objective"), status=_status(record),
                       seconds=0.0, tie_value=number("val_loss"),
                       val_samples=samples if isinstance(samples, int) else None)


def _num(value: Any) -> Any:
    return float(value) if is_number(value) else str(value)


def _all_positive(records: list[dict], moves: list[dict], param: str) -> bool:
    values = [r["values"][param] for r in records if param in r.get("values", {})]
    values += [v for m in moves if m.get("param") == param for v in (*m["old"], *m["new"])]
    return bool(values) and all(is_finite_number(v) and v > 0 for v in values)


def _fmt(bounds: Any) -> str:
    return "[" + ", ".join(f"{b:.3g}" if is_finite_number(b) else str(b) for b in bounds) + "]"


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if is_finite_number(value) else str(value)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
