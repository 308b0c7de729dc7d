"""Tables, goal checks, the plot and the docs section of ``ikdiffuser bench --protocols coverage``.

Reads the ``coverage`` part of each robot in the bench's JSON report
(:func:`ikdiffuser_ros.bench.coverage.run_coverage`).
"""

from __future__ import annotations

import math
from pathlib import Path

from ikdiffuser_ros.bench.coverage import summary

BEGIN, END = "<!-- ikdiffuser-coverage:begin -->", "<!-- ikdiffuser-coverage:end -->"
OURS, ABLATION = "ikdiffuser", "uniform+LM"
PLOT = "bench_coverage.png"


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f} %"


def _num(x: float, fmt: str = "{:.3g}") -> str:
    return "n/a" if x is None or math.isnan(x) else fmt.format(x)


def _robots(report: dict) -> dict[str, dict]:
    return {name: robot for name, robot in report["robots"].items() if "coverage" in robot}


def summary_json(report: dict) -> dict:
    """``{robot: {solver: {scope: averages}}}`` (:func:`~ikdiffuser_ros.bench.coverage.summary`)."""
    return {name: summary(robot["coverage"]) for name, robot in _robots(report).items()}


def _scope_label(scope: str) -> str:
    return "whole robot" if scope == "all" else scope


def ground_truth_line(cov: dict) -> str:
    """One sentence: the ground truth's mean sizes per target, per scope."""
    gt, n = cov["ground_truth"], max(len(cov["ground_truth"]["distinct"]), 1)

    def mean(xs: list) -> float:
        return sum(xs) / max(len(xs), 1)

    clusters = "; ".join(f"{_scope_label(s)} {mean(v):.1f} (first half of the LM restarts alone: "
                         f"{mean(gt['clusters_half'][s]):.1f})" for s, v in gt["clusters"].items())
    return (f"Ground truth, mean per target over {n} targets: {mean(gt['verified_lm']):.0f} verified LM restarts + "
            f"{mean(gt['verified_tracik']):.0f} verified TRAC-IK restarts, {mean(gt['distinct']):.0f} distinct "
            f"(0.05 rad / 5 mm), clusters: {clusters}; built in {mean(gt['seconds']):.2f} s per target.")


def table(cov: dict, scope: str = "all") -> str:
    """Markdown: every solver on one scope."""
    s = cov["settings"]
    n, k, budget = s["num_solutions"], s["mmd_k"], s["budget"]
    head = ["solver", f"MMD (first {k}) ↓ (median target)", f"clusters found, {n} solutions",
            f"clusters found, {budget:g} s", f"outside the ground truth ({n} sol.)", f"distinct of {n}",
            f"diversity of {n} [rad]", f"diversity in {budget:g} s [rad]", f"distinct/s ({budget:g} s)",
            f"s for {n} solutions"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for solver, per in summary(cov).items():
        r = per[scope]
        mmd = f"{_num(r['mmd'], '{:.3f}')} ({_num(r['mmd_median'], '{:.3f}')})"
        if r["scored"] < len(cov["ground_truth"]["distinct"]):
            mmd += f", {r['scored']} targets"
        lines.append("| " + " | ".join([
            solver, mmd, _pct(r["coverage_n"]), _pct(r["coverage_budget"]), _pct(r["outside_n"]),
            _num(r["distinct_n"], "{:.1f}"), _num(r["diversity_n"], "{:.2f}"), _num(r["diversity_budget"], "{:.2f}"),
            _num(r["distinct_per_s"], "{:.0f}"), _num(r["seconds_n"], "{:.3f}")]) + " |")
    return "\n".join(lines)


def arms_table(cov: dict) -> str:
    """Markdown: per arm (scopes other than the whole robot), MMD, clusters found and diversity per solver."""
    s = cov["settings"]
    arms = [a for a in cov["scopes"] if a != "all"]
    head = ["solver"] + [f"{a}: MMD (median target) / clusters @ {s['num_solutions']} / @ {s['budget']:g} s / "
                         "diversity" for a in arms]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for solver, per in summary(cov).items():
        cells = [f"{_num(per[a]['mmd'], '{:.3f}')} ({_num(per[a]['mmd_median'], '{:.3f}')}) / "
                 f"{_pct(per[a]['coverage_n'])} / {_pct(per[a]['coverage_budget'])} / "
                 f"{_num(per[a]['diversity_n'], '{:.2f}')}" for a in arms]
        lines.append("| " + " | ".join([solver, *cells]) + " |")
    return "\n".join(lines)


def goals(report: dict) -> list[str]:
    """The issue's coverage goals per robot and scope: MMD below every peer's, clusters covered with N solutions
    at least the best peer's, diversity of the N solutions at least every peer's ('met' / 'missed')."""
    out = []
    for name, robot in _robots(report).items():
        summ = summary(robot["coverage"])
        n = robot["coverage"]["settings"]["num_solutions"]
        peers = [s for s in summ if s not in (OURS, ABLATION)]
        if OURS not in summ or not peers:
            continue
        for scope in robot["coverage"]["scopes"]:
            ours, label = summ[OURS][scope], f"{name} ({_scope_label(scope)})"
            valid = [p for p in peers if not math.isnan(summ[p][scope]["mmd"])]
            if valid:
                best = min(valid, key=lambda p: summ[p][scope]["mmd"])
                m, b = ours["mmd"], summ[best][scope]["mmd"]
                out.append(f"{label}: MMD below every peer's: {m:.3f} vs {b:.3f} ({best}): "
                           f"{'met' if m < b else 'missed'}")
            best = max(peers, key=lambda p: summ[p][scope]["coverage_n"])
            c, b = ours["coverage_n"], summ[best][scope]["coverage_n"]
            out.append(f"{label}: clusters covered with {n} solutions >= the best peer's: {_pct(c)} vs {_pct(b)} "
                       f"({best}): {'met' if c >= b else 'missed'}")
            best = max(peers, key=lambda p: summ[p][scope]["diversity_n"])
            d, b = ours["diversity_n"], summ[best][scope]["diversity_n"]
            out.append(f"{label}: diversity of the {n} solutions >= every peer's: {d:.2f} vs {b:.2f} rad ({best}): "
                       f"{'met' if d >= b else 'missed'}")
    return out


def plot(report: dict, out_dir: Path) -> Path:
    """One PNG: per robot (per arm on multi-arm robots, and the whole robot), MMD (left; black ticks: the median
    target's) and the share of the ground-truth clusters found with N solutions (right; black ticks: within the
    time budget), per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    robots = _robots(report)
    groups = [(name, scope) for name, robot in robots.items() for scope in robot["coverage"]["scopes"]]
    summaries = {name: summary(robot["coverage"]) for name, robot in robots.items()}
    solvers = list(dict.fromkeys(s for summ in summaries.values() for s in summ))
    width = 0.8 / max(len(solvers), 1)
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 3.6 + 2.6 * len(groups)), 4.2))
    for k, solver in enumerate(solvers):
        offset = (k - (len(solvers) - 1) / 2) * width
        _plot_solver(axes, solver, _solver_bars(summaries, groups, solver, offset), width)
    _label_axes(axes, _group_labels(robots, groups), next(iter(robots.values()))["coverage"]["settings"])
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, ncol=len(solvers), loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PLOT
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _solver_bars(summaries: dict[str, dict], groups: list[tuple[str, str]], solver: str,
                 offset: float) -> dict[str, list[float]]:
    """One solver's bars over the (robot, scope) ``groups`` it ran on: ``x`` (the group's index + ``offset``),
    ``mmd`` and ``mmd_median`` (NaN drawn as 0), ``coverage_n`` and ``coverage_budget`` [%]."""
    bars: dict[str, list[float]] = {"x": [], "mmd": [], "mmd_median": [], "coverage_n": [], "coverage_budget": []}
    for i, (name, scope) in enumerate(groups):
        r = summaries[name].get(solver, {}).get(scope)
        if r is None:
            continue
        bars["x"].append(i + offset)
        bars["mmd"].append(0.0 if math.isnan(r["mmd"]) else r["mmd"])
        bars["mmd_median"].append(0.0 if math.isnan(r["mmd_median"]) else r["mmd_median"])
        bars["coverage_n"].append(100 * r["coverage_n"])
        bars["coverage_budget"].append(100 * r["coverage_budget"])
    return bars


def _plot_solver(axes, solver: str, bars: dict[str, list[float]], width: float) -> None:
    """Draw one solver's bars (:func:`_solver_bars`): MMD with the median target's as black ticks on the left
    axes, clusters found [%] with N solutions, within the budget as black ticks, on the right."""
    for ax, bar, tick in ((axes[0], "mmd", "mmd_median"), (axes[1], "coverage_n", "coverage_budget")):
        ax.bar(bars["x"], bars[bar], width, label=solver)
        ax.scatter(bars["x"], bars[tick], marker="_", s=80, color="k", zorder=3)


def _group_labels(robots: dict[str, dict], groups: list[tuple[str, str]]) -> list[str]:
    """x tick labels: the robot's name alone where it has one scope, else the name over the scope."""
    return [name if scope == "all" and len(robots[name]["coverage"]["scopes"]) == 1
            else f"{name}\n{_scope_label(scope)}" for name, scope in groups]


def _label_axes(axes, labels: list[str], settings: dict) -> None:
    """Ticks, grids, axis labels and titles of both axes (the titles name the sizes in ``settings``, a robot's
    coverage settings)."""
    for ax in axes:
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set(ylabel="MMD to the ground truth (lower is better)", xlim=(-0.6, len(labels) - 0.4))
    axes[1].set(ylabel="ground-truth clusters found [%]", ylim=(0, 105), xlim=(-0.6, len(labels) - 0.4))
    axes[0].set_title(f"MMD of the first {settings['mmd_k']} solutions, IMQ kernel, HJCD-IK's protocol\n"
                      "(bars: over all targets; black ticks: the median target)", fontsize=9)
    axes[1].set_title(f"clusters found with {settings['num_solutions']} solutions\n"
                      f"(black ticks: within {settings['budget']:g} s per target)", fontsize=9)


def markdown(report: dict, img_prefix: str = "img/") -> str:
    """The coverage section: settings, the ground truth, per-robot tables, per-arm tables, goals, the plot."""
    st = report["settings"]
    c = st.get("coverage") or next(iter(_robots(report).values()))["coverage"]["settings"]
    peers = ", ".join(f"{k} {v}" for k, v in st.get("versions", {}).items())
    parts = [
        f"Command: `{st['command']}` ({st['date']}, {st['machine']}, torch {st['torch']} with "
        f"{st['torch_threads']} thread(s); peers: {peers}).",
        "",
        f"Targets: the first {c['targets']} of protocol 2's (seed {st['seed'] + 1}). Ground truth per target: "
        f"{c['gt_restarts']} uniform starts of our LM and {c['gt_tracik']} TRAC-IK restarts (where installed), "
        f"verified, pooled; clusters at {c['cluster_rad']:g} rad / {c['cluster_m']:g} m. Per solver: "
        f"{c['num_solutions']} solutions asked per target (at most {c['cap']:g} s), MMD of the first {c['mmd_k']} "
        f"against {c['mmd_ref']} ground-truth solutions drawn at random; a second run of {c['budget']:g} s per "
        f"target keeps every answer.",
        "",
        f"![MMD and clusters found per solver]({img_prefix}{PLOT})",
        "",
    ]
    for name, robot in _robots(report).items():
        cov = robot["coverage"]
        parts += [f"### {name} ({robot['n_joints']} joints, end effectors {', '.join(robot['end_effectors'])})", "",
                  ground_truth_line(cov), "", table(cov, "all"), ""]
        if len(cov["scopes"]) > 1:
            parts += ["Per arm (the joints moving each end effector; ground truth projected and re-clustered):", "",
                      arms_table(cov), ""]
        parts += [f"- note: {n}" for n in robot["notes"]] + [""]
    parts += ["### Against the coverage goals of the issue", ""]
    parts += [f"- {g}" for g in goals(report)]
    return "\n".join(parts) + "\n"
