"""The search suite's statistics, report and plot (``benchmarks/search_suite.py``).

Input: per method, the runs of one landscape, each ``{"curve": [{"true", "estimate",
"posterior"?, "held_out"?}, ...], "wall_s"?}`` with one curve entry per evaluation spent.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

BASELINES = ("tpe", "cmaes", "random", "greedy")


def mean_se(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return statistics.fmean(xs), se


def at(curve: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """The entry after ``n`` evaluations (the last one if the run did fewer)."""
    return curve[min(n, len(curve)) - 1]


def summarize(runs: dict[str, list[dict[str, Any]]], checkpoints: list[int], evaluations: int) -> dict[str, Any]:
    """Per method: true fitness and winner's curse at each checkpoint, and the mean curve."""
    out: dict[str, Any] = {}
    for method, reps in runs.items():
        if not reps:
            continue
        row: dict[str, Any] = {"checkpoints": {}, "repeats": len(reps)}
        for n in checkpoints:
            trues = [at(r["curve"], n)["true"] for r in reps]
            curses = [at(r["curve"], n)["true"] - at(r["curve"], n)["estimate"]
                      for r in reps if at(r["curve"], n)["estimate"] is not None]
            m, se = mean_se(trues)
            cm, cse = mean_se(curses)
            row["checkpoints"][str(n)] = {"true_mean": m, "true_se": se, "curse_mean": cm, "curse_se": cse,
                                          "true": trues}
            posterior = [at(r["curve"], n)["true"] - at(r["curve"], n)["posterior"]
                         for r in reps if at(r["curve"], n).get("posterior") is not None]
            if posterior:  # evo only: the curse of its posterior mean
                pm, pse = mean_se(posterior)
                row["checkpoints"][str(n)].update(posterior_curse_mean=pm, posterior_curse_se=pse)
            held = [at(r["curve"], n)["true"] - at(r["curve"], n)["held_out"]
                    for r in reps if at(r["curve"], n).get("held_out") is not None]
            if held:  # evo only: the curse of its held-out val_bpb, where the run took them
                hm, hse = mean_se(held)
                row["checkpoints"][str(n)].update(held_out_curse_mean=hm, held_out_curse_se=hse,
                                                  held_out_repeats=len(held))
        row["mean_curve"] = [statistics.fmean(at(r["curve"], n)["true"] for r in reps)
                             for n in range(1, evaluations + 1)]
        walls = [r["wall_s"] for r in reps if "wall_s" in r]
        if walls:
            row["wall_s_mean"] = statistics.fmean(walls)
        out[method] = row
    return out


def verdicts(summary: dict[str, Any], checks: list[int]) -> dict[str, Any]:
    """Evo better than each baseline at each of ``checks``: difference > its standard error."""
    if "evo" not in summary:
        return {}
    out: dict[str, Any] = {}
    for base in BASELINES:
        if base not in summary:
            continue
        for n in checks:
            e, b = summary["evo"]["checkpoints"][str(n)], summary[base]["checkpoints"][str(n)]
            diff = b["true_mean"] - e["true_mean"]
            se = math.sqrt((e["true_se"] or 0.0) ** 2 + (b["true_se"] or 0.0) ** 2)
            out[f"{base}@{n}"] = {"diff": diff, "se": se, "evo_better": bool(diff > se)}
    return out


def evals_to_reach_greedy(summary: dict[str, Any], evaluations: int) -> int | None:
    """First evaluation count at which evo's mean true fitness <= greedy's final mean."""
    if "evo" not in summary or "greedy" not in summary:
        return None
    target = summary["greedy"]["mean_curve"][-1]
    for n, v in enumerate(summary["evo"]["mean_curve"], start=1):
        if v <= target:
            return n
    return None


def fmt(m: float, se: float, digits: int = 4) -> str:
    if not math.isfinite(m):
        return "-"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{m:.{digits}f}"


def report(result: dict[str, Any]) -> str:
    checkpoints = result["checkpoints"]
    lines = [
        "# Search suite: true fitness of each method's chosen genome",
        "",
        f"{result['repeats']} repeats, {result['evaluations']} evaluations, methods {', '.join(result['methods'])}; "
        f"evo sandbox: {result['sandbox']}"
        + (f", evo screening at {result['screen']:g} of the budget (evaluations counted in full-budget "
           "evaluations)" if result.get("screen") else "")
        + "; mean ± standard error over repeats; lower is better; "
        "seed 1.0000. Winner's curse = true - estimate of the chosen genome (positive = optimistic).",
        "",
    ]
    for group, title in ((False, "Tuning landscapes"), (True, "Held-out landscapes")):
        lands = [x for x in result["landscapes"] if x["held_out"] == group]
        if not lands:
            continue
        lines += [f"## {title}", ""]
        for land in lands:
            s = land["summary"]
            lines += [f"### {land['name']} (optimum {land['f_opt']:.4f}, sigma {land['sigma']:.4f})", ""]
            lines.append("| method | " + " | ".join(str(n) for n in checkpoints) + " | curse @64 | curse @last |")
            lines.append("|---|" + "---|" * (len(checkpoints) + 2))
            for method, row in s.items():
                cells = [fmt(row["checkpoints"][str(n)]["true_mean"], row["checkpoints"][str(n)]["true_se"])
                         for n in checkpoints]
                c64 = row["checkpoints"].get(str(min(64, checkpoints[-1])), {})
                clast = row["checkpoints"][str(checkpoints[-1])]
                lines.append(f"| {method} | " + " | ".join(cells)
                             + f" | {fmt(c64.get('curse_mean', float('nan')), c64.get('curse_se', float('nan')))}"
                             + f" | {fmt(clast['curse_mean'], clast['curse_se'])} |")
            post = s.get("evo", {}).get("checkpoints", {}).get(str(checkpoints[-1]), {})
            if "posterior_curse_mean" in post:
                lines.append(f"\nevo's curse measured on its posterior mean instead of the mean reading, @"
                             f"{checkpoints[-1]}: {fmt(post['posterior_curse_mean'], post['posterior_curse_se'])}")
            if "held_out_curse_mean" in post:
                lines.append(f"evo's curse measured on its held-out val_bpb (evo.held_out), @{checkpoints[-1]}: "
                             f"{fmt(post['held_out_curse_mean'], post['held_out_curse_se'])} "
                             f"({post['held_out_repeats']} repeats)")
            lines.append("")
            if land.get("evals_to_greedy_final") is not None or ("evo" in s and "greedy" in s):
                n = land.get("evals_to_greedy_final")
                lines.append(f"evaluations evo needs to reach greedy's {result['evaluations']}-evaluation mean "
                             f"({s['greedy']['mean_curve'][-1]:.4f}): {n if n is not None else 'not reached'}"
                             + (f" ({100 * n / result['evaluations']:.0f}%)" if n else ""))
            if land["verdicts"]:
                parts = [f"{k} {'yes' if v['evo_better'] else 'no'} ({v['diff']:+.4f} vs se {v['se']:.4f})"
                         for k, v in land["verdicts"].items()]
                lines.append("verdict (evo better than baseline by > se): " + "; ".join(parts))
            lines.append("")
    if result.get("evo_wall_s_mean"):
        lines.append(f"one {result['evaluations']}-evaluation evo run: {result['evo_wall_s_mean']:.0f} s wall "
                     f"(mean, with {result['jobs']} in parallel); whole suite {result['wall_s'] / 60:.1f} min")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lands = result["landscapes"]
    cols = min(3, len(lands))
    rows = math.ceil(len(lands) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, land in zip(axes.flat, lands, strict=False):
        for method, row in land["summary"].items():
            xs = [int(n) for n in row["checkpoints"]]
            ms = [row["checkpoints"][n]["true_mean"] for n in row["checkpoints"]]
            ses = [row["checkpoints"][n]["true_se"] for n in row["checkpoints"]]
            curve = row["mean_curve"]
            (line,) = ax.plot(range(1, len(curve) + 1), curve, label=method, lw=1.2)
            ax.errorbar(xs, ms, yerr=[0 if not math.isfinite(s) else s for s in ses], fmt="o", ms=3,
                        color=line.get_color(), capsize=2)
        ax.axhline(land["f_opt"], color="k", ls=":", lw=0.8, label="optimum")
        ax.set_title(land["name"] + (" (held out)" if land["held_out"] else ""))
        ax.set_xlabel("evaluations")
        ax.set_ylabel("true fitness of chosen genome")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(lands):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
