"""``evo plot``: a run's progress as a PNG, in the style of autoresearch's teaser figure.

x is the evaluation index (counted evaluations in the order they ran: COMPLETE, FAIL and
TIMEOUT; interrupted attempts are left out), y is that evaluation's val_bpb. Completed
evaluations that did not beat the best so far are grey dots, each new best (a genome's
first reading below every earlier genome's; a replicate of a genome is never a new best)
is a green dot labelled with its genome's description, the running best is a green step
line, and failures are red crosses on the top edge. Single readings carry noise: the title
also names the run's declared best, as ``evo status`` does. The y axis shows the interesting range (from
the best to the baseline or the 90th percentile, whichever is higher); worse scores sit
as grey triangles on the top edge.

Rendering uses matplotlib's Agg canvas directly (no pyplot, no global backend state).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evo.genome import write_atomic
from evo.records import EvalState, EvaluationRecord, GenomeRecord

WIDTH_PX, HEIGHT_PX, DPI = 1600, 800, 100
MAX_LABELS = 30  # label at most this many improvements (the largest ones and the baseline)
LABEL_CHARS = 60  # descriptions are cut to this many characters
LABEL_GAP_PX = 150  # labels whose points are closer than this (and a line height) would overlap

COUNTED = (EvalState.COMPLETE, EvalState.FAIL, EvalState.TIMEOUT)


@dataclass(frozen=True)
class Point:
    """One counted evaluation on the plot.

    Attributes:
        index: 1-based position in evaluation order (the x value).
        val_bpb: its val_bpb, ``None`` for a failure.
        kept: it set a new best (a genome's first reading, strictly lower than every
            earlier kept reading).
        improvement: how much lower than the previous best (0.0 for the baseline).
    """

    index: int
    genome_id: str
    val_bpb: float | None
    state: str
    failure_kind: str | None
    description: str
    kept: bool
    improvement: float


def progress_points(genomes: Iterable[GenomeRecord], evaluations: Iterable[EvaluationRecord]) -> list[Point]:
    """The points of the plot, one per counted evaluation of the search, in ``eval_id`` order
    (held-out evaluations, :mod:`evo.held_out`, are not the search's, and screens,
    :mod:`evo.screening`, read at another fidelity: both left out)."""
    descriptions = {g.genome_id: g.description for g in genomes}
    points: list[Point] = []
    best: float | None = None
    seen: set[str] = set()
    counted = sorted((e for e in evaluations if e.state in COUNTED and not e.held_out and not e.is_screen), key=lambda e: e.eval_id)
    for index, e in enumerate(counted, start=1):
        bpb = e.val_bpb if e.state is EvalState.COMPLETE else None
        kept = bpb is not None and e.genome_id not in seen and (best is None or bpb < best)
        if bpb is not None:  # a failed first attempt leaves the genome's first reading to come
            seen.add(e.genome_id)
        improvement = (best - bpb) if kept and best is not None else 0.0
        if kept:
            best = bpb
        points.append(Point(index, e.genome_id, bpb, e.state.value, e.failure_kind,
                            descriptions.get(e.genome_id, ""), kept, improvement))
    return points


IMAGE_FORMATS = ("png", "svg", "pdf")


def image_format(path: Path) -> str:
    """The image format ``path``'s suffix names (``png`` without a suffix).

    Raises:
        ValueError: a suffix of another format.
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix and suffix not in IMAGE_FORMATS:
        raise ValueError(f"cannot write a plot as .{suffix}: name a .png, .svg or .pdf file")
    return suffix or "png"


def _y_range(scores: Sequence[float]) -> tuple[float, float]:
    """(bottom, top) of the y axis: the best to max(baseline, 90th percentile), padded."""
    ordered = sorted(scores)
    low = ordered[0]
    high = max(scores[0], ordered[min(len(ordered) - 1, int(0.9 * (len(ordered) - 1) + 0.5))])
    span = high - low if high > low else max(abs(low) * 0.01, 1e-3)
    return low - 0.08 * span, high + 0.12 * span


def _labelled(kept: Sequence[Point], x_max: float, bottom: float, top: float,
              axes_w_px: float, axes_h_px: float) -> list[Point]:
    """The kept points that get a label: the baseline, then the largest improvements
    whose label would not sit on one already placed, at most :data:`MAX_LABELS`.

    Labels run up and to the right from their point, so two collide when their points are
    closer than :data:`LABEL_GAP_PX` horizontally and a line height vertically (pixels).
    """
    placed: list[tuple[float, float]] = []
    chosen = []
    for p in [kept[0], *sorted(kept[1:], key=lambda p: -p.improvement)]:
        x = p.index / x_max * axes_w_px
        y = (p.val_bpb - bottom) / (top - bottom) * axes_h_px
        if all(abs(x - qx) > LABEL_GAP_PX or abs(y - qy) > 14 for qx, qy in placed):
            placed.append((x, y))
            chosen.append(p)
        if len(chosen) == MAX_LABELS:
            break
    return chosen


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def render_progress(points: Sequence[Point], path: Path, title: str,
                    width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX) -> None:
    """Draw the points and save a PNG of exactly ``width_px`` x ``height_px`` pixels
    (written atomically, with the mode the umask gives, 0644 by default).

    Raises:
        OSError: the file cannot be written.
    """
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel("evaluation #")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    complete = [p for p in points if p.val_bpb is not None]
    failed = [p for p in points if p.val_bpb is None]
    n = len(points)
    ax.set_xlim(0, max(n, 1) + 1)
    if not complete:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, "no completed evaluation yet", transform=ax.transAxes, ha="center", color="#888888")
    else:
        bottom, top = _y_range([p.val_bpb for p in complete])
        ax.set_ylim(bottom, top)
        inside = [p for p in complete if not p.kept and p.val_bpb <= top]
        above = [p for p in complete if not p.kept and p.val_bpb > top]
        kept = [p for p in complete if p.kept]  # the first completed reading always is: never empty here
        ax.scatter([p.index for p in inside], [p.val_bpb for p in inside], s=14, color="#b8b8b8",
                   alpha=0.8, linewidths=0, label=f"discarded ({len(inside) + len(above)})", zorder=2)
        if above:
            ax.scatter([p.index for p in above], [0.985] * len(above), s=16, marker="^", color="#b8b8b8",
                       transform=ax.get_xaxis_transform(), clip_on=False, zorder=2,
                       label=f"worse than the axis shows ({len(above)})")
        # the running best: a step after each kept point, carried on to the last evaluation
        xs = [p.index for p in kept] + [n]
        ys = [p.val_bpb for p in kept] + [kept[-1].val_bpb]
        ax.step(xs, ys, where="post", color="#2ca02c", linewidth=1.8, label="running best", zorder=3)
        ax.scatter([p.index for p in kept], [p.val_bpb for p in kept], s=36, color="#2ca02c",
                   edgecolors="#145214", linewidths=0.8, label=f"kept: new best ({len(kept)})", zorder=4)
        for p in _labelled(kept, n + 1, bottom, top, 0.9 * width_px, 0.85 * height_px):
            high = (p.val_bpb - bottom) / (top - bottom) > 0.75  # a label rising from there would cross the title
            ax.annotate(_short(f"{p.genome_id} {p.description}"), (p.index, p.val_bpb), xytext=(5, -5 if high else 5),
                        textcoords="offset points", rotation=-22 if high else 22, rotation_mode="anchor",
                        fontsize=7.5, color="#145214", ha="left", va="top" if high else "bottom", zorder=5,
                        annotation_clip=True)
    if failed:
        ax.scatter([p.index for p in failed], [1.0] * len(failed), marker="x", s=30, color="#d62728",
                   linewidths=1.5, transform=ax.get_xaxis_transform(), clip_on=False, zorder=5,
                   label=f"failed ({len(failed)}), at the top edge")
    if points:
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.97), fontsize=8, framealpha=0.9)  # below the failure row
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format=image_format(path))
    write_atomic(path, buffer.getvalue())


def plot_progress(genomes: Sequence[GenomeRecord], evaluations: Sequence[EvaluationRecord], run: str,
                  path: Path, width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX,
                  declared: tuple[str, float, int] | None = None) -> list[Point]:
    """Plot a run's progress to a PNG at ``path``.

    Args:
        declared: the run's declared best (genome id, mean val_bpb, readings), named in the title.

    Returns:
        The plotted points (one per counted evaluation).

    Raises:
        OSError: the file cannot be written.
    """
    points = progress_points(genomes, evaluations)
    kept = [p for p in points if p.kept]
    title = f"run {run}: {len(points)} evaluations, {len(kept)} kept improvements"
    if kept:
        title += f", lowest first reading {kept[-1].val_bpb:.6f} ({kept[-1].genome_id})"
    if declared is not None:
        title += f"; declared best {declared[0]}: val_bpb {declared[1]:.6f} over {declared[2]} reading(s)"
    render_progress(points, path, title, width_px, height_px)
    return points
