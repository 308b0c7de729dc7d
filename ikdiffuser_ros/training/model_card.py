"""Held-out evaluation of a checkpoint and its README model card.

``python -m ikdiffuser_ros.training.model_card CHECKPOINT_DIR [--robot NAME] [--write-readme]``
``python -m ikdiffuser_ros.training.model_card RUN_DIR --ship models/<robot> [--steps S --tail-steps K] [--force]``

Metrics are of *raw* samples (the card's sampler: DDIM steps + low-noise tail, no guidance, no
refinement; and plain DDIM-20 for comparison across models) on held-out targets: the FK of joint
configurations drawn uniformly within the limits with seed 2_000_003 (the training streams use other
seeds). Errors per target are the worst over its constrained end effectors.

``--ship`` copies a training run's checkpoint into ``models/<robot>`` with its sampler defaults and
its learning curve, but only if its held-out median position error beats the shipped one's
(``--force`` to replace anyway, e.g. for a new architecture whose numbers are not comparable).
The same as a subcommand, for any model folder (e.g. one on ``$IKDIFFUSER_MODEL_PATH``)::

    ikdiffuser ship RUN_DIR --out DIR [--steps 4 --tail-steps 15] [--num-targets 1000] [--robot NAME|YAML] [--force]

The robot is ``--robot``, else the robot YAML the run was trained with (its training config's
``robot``, when that file exists), else the card's robot name in ``config/robots``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path

import torch

from ikdiffuser_ros.kinematics.joint_names import planar_indices

HELD_OUT_SEED = 2_000_003
#: raw-sample goals (issue 7): single-arm robots, and robots with several end effectors.
GOAL_MM, GOAL_DEG = 10.0, 3.0
GOAL_MULTI_MM, GOAL_MULTI_DEG = 20.0, 5.0
#: one-sample success goals (issue 19) by end-effector count: one arm, two arms, more (humanoids).
ONE_SAMPLE_GOALS = {1: 0.995, 2: 0.98}
ONE_SAMPLE_GOAL_MORE = 0.95


def one_sample_goal(n_ee: int) -> float:
    """The one-sample success goal of a robot with ``n_ee`` end effectors (a share of targets)."""
    return ONE_SAMPLE_GOALS.get(n_ee, ONE_SAMPLE_GOAL_MORE)


def raw_goal(n_ee: int) -> tuple[float, float]:
    """Median raw-sample goal (mm, deg) for a robot with ``n_ee`` end effectors."""
    return (GOAL_MM, GOAL_DEG) if n_ee == 1 else (GOAL_MULTI_MM, GOAL_MULTI_DEG)


def fcl_free(robot, q: torch.Tensor) -> torch.Tensor | None:
    """(M,) bool, True where (M, n) configurations are free of self collision by exact FCL (None without python-fcl)."""
    try:
        from ikdiffuser_ros.collision.fcl_checker import CollisionChecker
    except ImportError:
        return None
    return torch.as_tensor(CollisionChecker(robot).check(q.double()).free)


def _share(free: torch.Tensor | None) -> float | None:
    return None if free is None else round(float(free.float().mean()), 4)


@torch.no_grad()
def collision_metrics(loaded, robot, q_ref: torch.Tensor, q_raw: torch.Tensor, kw: dict, gen) -> dict:
    """Self-collision-free share (exact FCL) of the raw samples ``q_raw`` (K, n) already drawn for the
    held-out targets of ``q_ref`` (K, n) (first 200), of the targets' own configurations, and of raw
    samples for targets whose configuration is itself free (feasible)."""
    from ikdiffuser_ros.sampling.sampler import sample, targets_from_poses

    free_ref = fcl_free(robot, q_ref[:400])
    if free_ref is None:
        return {}
    feasible = q_ref[:400][free_ref][:200]
    pos, rot6d = targets_from_poses(robot.fk(feasible).float())
    q_feasible = sample(loaded, pos, rot6d, num_solutions=1, generator=gen(), **kw)[:, 0]
    return {"uniform_self_collision_free_share": _share(free_ref[:200]),
            "self_collision_free_share": _share(fcl_free(robot, q_raw[:200])),
            "self_collision_free_share_feasible_targets": _share(fcl_free(robot, q_feasible))}


def _stats(dp_m: torch.Tensor, dr_rad: torch.Tensor) -> dict:
    mm, deg = dp_m * 1000, torch.rad2deg(dr_rad)
    return {"pos_mm_median": round(mm.median().item(), 2), "pos_mm_p90": round(mm.quantile(0.9).item(), 2),
            "rot_deg_median": round(deg.median().item(), 2), "rot_deg_p90": round(deg.quantile(0.9).item(), 2),
            "num_targets": int(mm.shape[0])}


def _held_out_targets(robot, num_targets: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The held-out targets: FK of ``num_targets`` = K configurations uniform within the limits (seed
    :data:`HELD_OUT_SEED`).

    Returns:
        q_ref: (K, n) float64 joint values of the targets.
        T_ref: (K, E, 4, 4) float64 end-effector poses in the root frame [m].
        pos: (K, E, 3) float32 target positions [m].
        rot6d: (K, E, 6) float32 target rotations (first two columns of R).
    """
    from ikdiffuser_ros.data.generate import sample_fk

    q_ref = sample_fk(robot, num_targets, torch.Generator().manual_seed(HELD_OUT_SEED))[0].double()
    return (q_ref, *_targets_of(robot, q_ref))


def _targets_of(robot, q_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FK targets of configurations ``q_ref`` (K, n): (T_ref (K, E, 4, 4) float64 [m], pos (K, E, 3), rot6d (K, E, 6))."""
    from ikdiffuser_ros.sampling.sampler import targets_from_poses

    T_ref = robot.fk(q_ref.double())
    return (T_ref, *targets_from_poses(T_ref.float()))


def _all_end_effector_metrics(loaded, robot, pos, rot6d, T_ref, kw: dict, gen) -> tuple[dict, torch.Tensor]:
    """Errors of one raw sample per target, worst over the end effectors, by plain DDIM-20 and by the card's sampler.

    ``pos`` (K, E, 3) [m], ``rot6d`` (K, E, 6) and ``T_ref`` (K, E, 4, 4) [m] are the targets, ``kw`` the card's
    sampler options (``steps``, ``tail_steps``) and ``gen()`` a fresh seeded generator for each sampling.

    Returns:
        ({"all_end_effectors_ddim20": stats, "all_end_effectors": stats}, the (K, n) float32 samples of the card's
        sampler).
    """
    ddim20, _ = _worst_end_effector_stats(loaded, robot, pos, rot6d, T_ref, {"steps": 20}, gen())
    card, q = _worst_end_effector_stats(loaded, robot, pos, rot6d, T_ref, kw, gen())
    return {"all_end_effectors_ddim20": ddim20, "all_end_effectors": card}, q


def _worst_end_effector_stats(loaded, robot, pos, rot6d, T_ref, kw: dict, generator) -> tuple[dict, torch.Tensor]:
    """Stats of one raw sample per target (sampler options ``kw``, worst over the end effectors) and the (K, n)
    float32 samples; targets as in :func:`_all_end_effector_metrics`."""
    from ikdiffuser_ros.kinematics.transforms import pose_errors
    from ikdiffuser_ros.sampling.sampler import sample

    q = sample(loaded, pos, rot6d, num_solutions=1, generator=generator, **kw)[:, 0]
    dp, dr = pose_errors(robot.fk(q.double()), T_ref)
    return _stats(dp.amax(-1), dr.amax(-1)), q


def _single_end_effector_metrics(loaded, robot, pos, rot6d, T_ref, kw: dict, gen) -> dict:
    """{end-effector link: stats} of one raw sample per target that constrains only that end effector.

    Targets, ``kw`` and ``gen`` as in :func:`_all_end_effector_metrics`.
    """
    from ikdiffuser_ros.kinematics.transforms import pose_errors
    from ikdiffuser_ros.sampling.sampler import sample

    K, E = pos.shape[0], len(robot.end_effectors)
    out = {}
    for e, link in enumerate(robot.end_effectors):
        mask = torch.zeros(K, E, dtype=torch.bool)
        mask[:, e] = True
        q = sample(loaded, pos, rot6d, mask, num_solutions=1, generator=gen(), **kw)[:, 0]
        dp, dr = pose_errors(robot.fk(q.double()), T_ref)
        out[link] = _stats(dp[:, e], dr[:, e])
    return out


def _best_of_stats(loaded, robot, pos, rot6d, T_ref, best_of: int, kw: dict, gen) -> dict:
    """Stats of the best of ``best_of`` = N raw samples per target (by position error [m] + 0.1 * rotation error
    [rad], worst over the end effectors). Targets (K of them), ``kw`` and ``gen`` as in
    :func:`_all_end_effector_metrics`."""
    from ikdiffuser_ros.kinematics.transforms import pose_errors
    from ikdiffuser_ros.sampling.sampler import sample

    K = pos.shape[0]
    q = sample(loaded, pos, rot6d, num_solutions=best_of, generator=gen(), **kw)
    dp, dr = pose_errors(robot.fk(q.double()), T_ref[:, None])
    dp, dr = dp.amax(-1), dr.amax(-1)  # (K, N)
    best = (dp + 0.1 * dr).argmin(1)  # 1 deg ~ 1.7 mm
    idx = torch.arange(K)
    return _stats(dp[idx, best], dr[idx, best])


def _one_sample_success(loaded, robot, T_ref: torch.Tensor) -> dict:
    """Share of the held-out targets ``T_ref`` (K, E, 4, 4) that one sample + LM solves (:func:`one_sample_solved`),
    as the bench and issue 19 count it, and the indices of those it does not (``failed``: for failure studies, and
    ``ship``'s paired comparison without solving them again)."""
    ok = one_sample_solved(loaded, robot, T_ref)
    return {"success": round(ok.double().mean().item(), 4), "goal": one_sample_goal(len(robot.end_effectors)),
            "num_targets": int(T_ref.shape[0]), "failed": (~ok).nonzero().flatten().tolist()}


def solved_targets(one_sample_lm: dict) -> torch.Tensor:
    """(K,) bool from an ``one_sample_lm`` entry of :func:`evaluate_checkpoint`: the targets one sample + LM solved."""
    ok = torch.ones(one_sample_lm["num_targets"], dtype=torch.bool)
    ok[one_sample_lm["failed"]] = False
    return ok


def one_sample_solved(loaded, robot, T_ref: torch.Tensor) -> torch.Tensor:
    """(K,) bool: the held-out targets ``T_ref`` (K, E, 4, 4) that one diffusion sample (the card's LM-ready plan)
    refined by the solver's LM solves: every end effector within 1e-5 m / 1e-4 rad by float64 FK and the joints
    within limits (``bench.protocols.verified``)."""
    from ikdiffuser_ros.bench.protocols import verified
    from ikdiffuser_ros.solver import IKDiffuserSolver, SolveBatch

    solver = IKDiffuserSolver.from_model(loaded, robot)
    rows = solver.run(SolveBatch.of(T_ref, 1, robot.n_joints), random_seed=0)
    return torch.as_tensor(verified(robot, rows["q"], T_ref))


def _timings(loaded, pos, rot6d, kw: dict, gen) -> dict:
    """Wall times [s] of the card's sampler for 32 and 1000 samples of the first target (``pos`` (K, E, 3) [m],
    ``rot6d`` (K, E, 6))."""
    from ikdiffuser_ros.sampling.sampler import sample

    out = {}
    t0 = time.perf_counter()
    sample(loaded, pos[:1], rot6d[:1], num_solutions=32, generator=gen(), **kw)
    out["time_1_target_32_solutions_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    sample(loaded, pos[:1], rot6d[:1], num_solutions=1000, generator=gen(), **kw)
    out["time_1000_samples_s"] = round(time.perf_counter() - t0, 3)
    return out


def card_plan(loaded) -> dict:
    """Keyword arguments of :func:`~ikdiffuser_ros.sampling.sampler.sample` for the card's plan of raw samples:
    ``steps``, ``tail_steps`` and ``temperature``."""
    from ikdiffuser_ros.sampling.sampler import default_sampling, default_temperature

    steps, tail = default_sampling(loaded)
    return dict(steps=steps, tail_steps=tail, temperature=default_temperature(loaded))


def plan_name(steps: int, tail_steps: int, temperature: float) -> str:
    """E.g. ``"ddim-4 + tail-15, temperature 0.5"`` (``"ddim-20"``: no tail, temperature 1)."""
    return (f"ddim-{steps}" + (f" + tail-{tail_steps}" if tail_steps else "")
            + (f", temperature {temperature:g}" if temperature != 1.0 else ""))


@torch.no_grad()
def evaluate_checkpoint(directory, robot, num_targets: int = 1000, best_of: int = 16, best_of_targets: int = 100,
                        seed: int = 0) -> dict:
    """Raw-sample accuracy of a checkpoint with its card's sampler: all EEs, each EE alone (E > 1), best
    of N, self-collision-free share, timing; all EEs with plain DDIM-20; and the share one sample + LM solves."""
    from ikdiffuser_ros.model.checkpoint import load_checkpoint, stored_weights_dtype

    loaded = load_checkpoint(directory, robot)
    kw = card_plan(loaded)
    q_ref, T_ref, pos, rot6d = _held_out_targets(robot, num_targets)
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    out: dict = {"sampler": plan_name(**kw), "held_out_seed": HELD_OUT_SEED}
    all_ee, q = _all_end_effector_metrics(loaded, robot, pos, rot6d, T_ref, kw, gen)
    out.update(all_ee)
    out.update(collision_metrics(loaded, robot, q_ref, q, kw, gen))
    if len(robot.end_effectors) > 1:
        out["single_end_effector"] = _single_end_effector_metrics(loaded, robot, pos, rot6d, T_ref, kw, gen)
    K = min(best_of_targets, num_targets)
    out[f"best_of_{best_of}"] = _best_of_stats(loaded, robot, pos[:K], rot6d[:K], T_ref[:K], best_of,
                                               {**kw, "temperature": 1.0}, gen)  # as a query for several samples
    out["one_sample_lm"] = _one_sample_success(loaded, robot, T_ref)
    out.update(_timings(loaded, pos, rot6d, kw, gen))
    out["torch_threads"] = torch.get_num_threads()
    out["weights_dtype"] = stored_weights_dtype(directory)
    return out


def _intro(card: dict, weights_dtype: str = "float32") -> list[str]:
    """Title, what the model is and where it is loaded, and the architecture paragraph."""
    r = card["robot"]
    stored = "" if weights_dtype == "float32" else f", stored as {weights_dtype}, computed in float32"
    return [
        f"# IKDiffuser model: {r['name']}",
        "",
        f"Diffusion-model IK prior for `{r['name']}` ({len(r['joint_names'])} joints, end effectors "
        f"{', '.join('`%s`' % e for e in r['end_effectors'])}; robot fingerprint `{r['fingerprint']}`). "
        "Loaded by `ikdiffuser_ros.model.checkpoint.load_checkpoint` / `IKDiffuserSolver.from_checkpoint`; "
        f"files: `model.safetensors` (EMA weights{stored} + normalizer), `card.json` (everything below, machine-readable).",
        "",
        "## Architecture",
        _architecture(card),
    ]


def _data_filters(training: dict) -> str:
    """What the card's training data kept and how joints were folded, as a clause of the data line."""
    free = training.get("dataset", {}).get("self_collision_free")
    by = {"fcl": "exact FCL", "spheres": "the sphere model"}.get(free, str(free))
    out = f", kept only if free of self collision by {by}" if free else ""
    if training.get("config", {}).get("fold_full_turns"):
        out += ", any joint spanning more than a turn learnt in one"
    return out


def _training_section(card: dict) -> list[str]:
    """The "Data and training" section: data, optimizer, this run's wall time [min] and hardware, the total [h]."""
    tr = card.get("training", {})
    hw = tr.get("hardware", {})
    total = tr.get("cumulative", {})
    device = hw.get("gpu") or "no GPU"
    return [
        "## Data and training",
        f"- data: {tr.get('dataset', {}).get('source', '?')} (joints uniform within limits{_data_filters(tr)}"
        f", float64 FK), "
        f"{_thousands(tr.get('samples_seen'))} samples seen; each row constrains a random subset of end effectors "
        f"(p_keep {tr.get('config', {}).get('p_keep_ee')}, >= 1) and is position-only with p "
        f"{tr.get('config', {}).get('p_pos_only')}",
        f"- {_thousands(tr.get('steps'))} AdamW steps, batch {tr.get('batch_size')}, lr {tr.get('config', {}).get('lr')} "
        f"(warmup + cosine), EMA {tr.get('config', {}).get('ema_decay')}, seed {tr.get('config', {}).get('seed')}",
        f"- this run: wall time {tr.get('wall_time_s', 0) / 60:.1f} min on a **2-core CPU** shared with other jobs "
        f"({hw.get('cpu', '?')}, {hw.get('torch_threads', 1)} torch thread(s), torch {hw.get('torch', '?')}); {device}",
        f"- **total training: {total.get('hours', tr.get('wall_time_s', 0) / 3600):.2f} h, "
        f"{total.get('steps', tr.get('steps', 0)):,} steps over {total.get('runs', 1)} run(s)** "
        f"(each run warm-starts from the previous checkpoint with `--resume-from`)",
    ]


def _accuracy_row(name: str, m: dict) -> str:
    """One table row: median and p90 position [mm] and rotation [deg] errors, number of targets."""
    return (f"| {name} | {m['pos_mm_median']:.1f} | {m['pos_mm_p90']:.1f} | {m['rot_deg_median']:.2f} | "
            f"{m['rot_deg_p90']:.2f} | {m['num_targets']} |")


def _accuracy_table(metrics: dict, joint_names: list[str]) -> list[str]:
    """The "Held-out accuracy of raw samples" section: one table row per query of :func:`evaluate_checkpoint`."""
    mobile = "; the planar base placed in closed form for the sampled arms (`kinematics/planar_base.py`)" \
        if planar_indices(joint_names) else ""
    lines = [
        "## Held-out accuracy of raw samples (no guidance, no refinement)",
        f"{metrics['sampler'].replace('ddim', 'DDIM')}{mobile}, targets = FK of uniform joint samples (seed "
        f"{metrics['held_out_seed']}); error = worst over constrained end effectors.",
        "",
        "| query | median pos [mm] | p90 pos [mm] | median rot [deg] | p90 rot [deg] | targets |",
        "| --- | --- | --- | --- | --- | --- |",
        _accuracy_row("all end effectors, 1 sample", metrics["all_end_effectors"]),
    ]
    if "all_end_effectors_ddim20" in metrics:
        lines.append(_accuracy_row("all end effectors, 1 sample, plain DDIM-20 (no tail)",
                                   metrics["all_end_effectors_ddim20"]))
    for link, m in metrics.get("single_end_effector", {}).items():
        lines.append(_accuracy_row(f"`{link}` only, 1 sample", m))
    for k, m in metrics.items():
        if k.startswith("best_of_"):
            lines.append(_accuracy_row(f"all end effectors, best of {k[8:]}", m))
    return lines


def _raw_sample_notes(card: dict, metrics: dict) -> list[str]:
    """Self-collision-free shares, the raw-sample goal (met or not) and the sampling times [ms]."""
    allm = metrics["all_end_effectors"]
    goal_mm, goal_deg = raw_goal(len(card["robot"]["end_effectors"]))
    ok = allm["pos_mm_median"] <= goal_mm and allm["rot_deg_median"] <= goal_deg
    return [
        f"Raw samples free of self collision (exact FCL, 200 held-out targets): "
        f"{_pct(metrics.get('self_collision_free_share'))}; for targets whose own configuration is free "
        f"(feasible without collision): {_pct(metrics.get('self_collision_free_share_feasible_targets'))}; uniform "
        f"random joints: {_pct(metrics.get('uniform_self_collision_free_share'))}.",
        "",
        f"Goal for raw samples: median <= {goal_mm:.0f} mm / {goal_deg:.0f} deg. "
        + ("**Met.**" if ok else
           f"**Not met**: this CPU-budget model is {allm['pos_mm_median'] / goal_mm:.1f}x off in position. Its "
           "samples are a rough prior: the solver's Levenberg-Marquardt refinement (`sampling/refine.py`) is what "
           "brings solutions to tolerance. Training longer (or on a GPU) with the same command and a larger "
           "`--max-minutes` / `max_steps` is the way to a usable raw accuracy."),
        *_one_sample_note(metrics),
        f"Sampling 32 solutions for one target: {metrics['time_1_target_32_solutions_s'] * 1000:.0f} ms "
        f"({metrics['torch_threads']} thread(s)); 1000 samples: {metrics.get('time_1000_samples_s', float('nan')) * 1000:.0f} ms.",
    ]


def _one_sample_note(metrics: dict) -> list[str]:
    """One sample + LM: the share of held-out targets solved against its goal (models evaluated before it have none)."""
    m = metrics.get("one_sample_lm")
    if m is None:
        return []
    met = "**met**" if m["success"] >= m["goal"] else "**not met**"
    return [f"One sample + the solver's LM (the card's LM-ready plan) solves {_pct(m['success'])} of {m['num_targets']} "
            f"held-out targets (1e-5 m, 1e-4 rad, within limits); goal {_pct(m['goal'])}: {met}.", ""]


def _reproduce_section(card: dict, reproduce: str) -> list[str]:
    """The "Reproduce" section: the training command ``reproduce``, the ``--ship`` command, the recorded command."""
    r, tr = card["robot"], card.get("training", {})
    return [
        "## Reproduce",
        "```bash",
        f"OMP_NUM_THREADS=1 {reproduce}",
        *_ship_line(card),
        "```",
        f"Training command as recorded: `{tr.get('command', '?')}` (config `config/training/{r.get('name')}.yaml` "
        "is the default for `--config`). CPU timing makes the number of steps in a wall-clock budget vary; "
        "pass `--max-steps` for an exact replay.",
    ]


def readme(card: dict, metrics: dict, reproduce: str) -> str:
    """Markdown model card from ``card.json`` and :func:`evaluate_checkpoint` metrics."""
    sections = [_intro(card, metrics.get("weights_dtype", "float32")), _training_section(card),
                _accuracy_table(metrics, card["robot"]["joint_names"]), _raw_sample_notes(card, metrics),
                _reproduce_section(card, reproduce)]
    return "\n".join(line for section in sections for line in [*section, ""])


def _ship_line(card: dict) -> list[str]:
    """The ``--ship`` command that put this checkpoint into models/ (with its sampler defaults)."""
    sampling, out = card.get("sampling"), card.get("training", {}).get("config", {}).get("out_dir")
    if not sampling or not out:
        return []
    return [f"ikdiffuser ship {out} --out models/{card['robot']['name']} "
            f"--steps {sampling['steps']} --tail-steps {sampling.get('tail_steps', 0)} --num-targets 1000"]


def _thousands(x) -> str:
    """A count with thousands separators (``1,234``); ``?`` when the card does not record it."""
    if x is None:
        return "?"
    return f"{x:,}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def _pct(x: float | None) -> str:
    return "n/a (no python-fcl)" if x is None else f"{100 * x:.1f} %"


def _architecture(card: dict) -> str:
    """One paragraph on the card's architecture."""
    a, tr = card["architecture"], card.get("training", {})
    T = card["schedule"]["num_train_steps"]
    if a.get("type") == "IKMLPDenoiser":
        fb = ("conditioned on the **kinematic feedback** of the noisy sample (its end-effector poses by FK, their "
              "error to the targets and one damped least-squares joint step)") if a.get("fk_feedback") else \
            "without kinematic feedback"
        return (f"IKMLPDenoiser: residual MLP, width {a['d_model']}, {a['n_blocks']} blocks, {fb}; "
                f"{tr.get('parameters', '?')} parameters. Epsilon prediction, cosine schedule with T = {T}. Free end "
                "effectors and the rotation of position-only targets are zeroed and flagged.")
    return (f"IKDenoiser (arXiv 2506.13087 style): one token per joint + one per end effector; d_model "
            f"{a['d_model']}, {a['n_heads']} heads, {a['n_layers']} blocks (timestep residual, joint self-attention, "
            f"cross-attention to end-effector tokens, MLP x{a['ff_mult']}); {tr.get('parameters', '?')} parameters. "
            f"Epsilon prediction, cosine schedule with T = {T}. Free end effectors use a learned token; "
            "position-only targets zero the rotation and add a learned flag.")


#: The LM-ready plan written into shipped cards (``sampling.refined_*``): 3 DDIM steps and one tail
#: pass give the LM starts as good as DDIM-4 + tail-15 on every shipped robot (docs/training.md).
REFINED_STEPS, REFINED_TAIL_STEPS = 3, 1
#: The sampler's temperature written into shipped cards (``sampling.temperature``): initial noise of standard deviation
#: 0.5 puts fewer samples between modes or beyond a limit (one sample + LM, docs/solver.md "A sampling temperature").
DEFAULT_TEMPERATURE = 0.5
#: The raw-sample plan ``ship`` writes into cards by default (``sampling.steps``, ``sampling.tail_steps``).
SHIPPED_STEPS, SHIPPED_TAIL_STEPS = 4, 15
#: A harvest's stochastic DDIM steps ``ship`` writes into the card of a robot with one end effector
#: (``sampling.harvest_steps``): a single arm's 1 s harvests spread as widely with 6 steps as with the diverse plan's
#: 10 and find 1.3x the distinct solutions per second (panda, kinova); with several end effectors 6 steps narrow
#: them (baxter 5.36 -> 5.29 rad, dual_ur5_mobile 8.43 -> 8.22, mobile_baxter 6.29 -> 6.03), so their cards keep the
#: diverse plan (docs/solver.md, "Harvests of a single arm").
HARVEST_STEPS_ONE_END_EFFECTOR = 6


def shipped_sampling(steps: int = SHIPPED_STEPS, tail_steps: int = SHIPPED_TAIL_STEPS,
                     temperature: float = DEFAULT_TEMPERATURE, n_end_effectors: int = 1) -> dict:
    """The card's ``sampling`` section as ``ship`` writes it: the raw plan, the LM-ready plan, the temperature and,
    for a robot of one end effector (``n_end_effectors``), a harvest's steps."""
    harvest = {"harvest_steps": HARVEST_STEPS_ONE_END_EFFECTOR} if n_end_effectors == 1 else {}
    return {"steps": steps, "tail_steps": tail_steps, "refined_steps": REFINED_STEPS,
            "refined_tail_steps": REFINED_TAIL_STEPS, "temperature": temperature, **harvest}


@torch.no_grad()
def as_shipped_metrics(loaded, q_ref: torch.Tensor, seed: int = 0) -> dict:
    """What ``ship`` would measure, on held-out configurations ``q_ref`` (K, n) of ``loaded.robot`` (CPU): the raw
    samples' median position error [mm] (worst end effector) with the card ``ship`` writes by default
    (``shipped_pos_mm_median``), and the share of the K targets that one sample + LM solves (``one_sample_lm``).
    The trainer logs both beside its DDIM-20 curve: the plan that ships, not DDIM-20, is what users run."""
    shipped = copy.copy(loaded)
    robot = loaded.robot
    shipped.card = {**loaded.card, "sampling": shipped_sampling(n_end_effectors=len(robot.end_effectors))}
    T_ref, pos, rot6d = _targets_of(robot, q_ref)
    stats, _ = _worst_end_effector_stats(shipped, robot, pos, rot6d, T_ref, card_plan(shipped),
                                         torch.Generator().manual_seed(seed))
    ok = one_sample_solved(shipped, robot, T_ref)
    return {"shipped_pos_mm_median": stats["pos_mm_median"], "one_sample_lm": round(ok.double().mean().item(), 4)}


def robot_of_card(card: dict, robot: str | None = None) -> str:
    """The robot to evaluate a checkpoint on: ``robot`` if given, else the robot YAML its training run named
    (when that file exists from here), else the card's robot name."""
    if robot:
        return robot
    trained = card.get("training", {}).get("config", {}).get("robot")
    if isinstance(trained, str) and Path(trained).suffix in (".yaml", ".yml") and Path(trained).is_file():
        return trained
    return card["robot"]["name"]


def lineage_curve(run_dir: Path, depth: int = 0) -> str:
    """The learning curve (JSON lines) of a run and of every run it warm-started from: the curve of the model
    folder it started from (``learning_curve.jsonl``), or of the run folder (followed back in turn), then this
    run's ``metrics.jsonl``. A source that is gone from this machine ends the curve there (with a note)."""
    from ikdiffuser_ros.training.learning_curve import CURVE_FILE

    own = (run_dir / "metrics.jsonl").read_text()
    card = json.loads((run_dir / "card.json").read_text())
    src = card.get("training", {}).get("cumulative", {}).get("warm_started_from")
    if not src or depth > 100:
        return own
    src = Path(src)
    if (src / CURVE_FILE).is_file():
        return (src / CURVE_FILE).read_text() + own
    if (src / "metrics.jsonl").is_file() and (src / "card.json").is_file():
        return lineage_curve(src, depth + 1) + own
    print(f"note: the learning curve starts at {run_dir}: {src}, where it was warm-started from, is not here")
    return own


@torch.no_grad()
def held_out_median(directory: Path, robot, num_targets: int) -> float:
    """The held-out raw median [mm] of the checkpoint in ``directory`` (worst end effector, one sample per target by
    its card's sampler): :func:`evaluate_checkpoint`'s ``all_end_effectors`` median, measured now, by the code that
    measures a new run (a stored ``eval.json`` may predate a change of the sampler)."""
    from ikdiffuser_ros.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(directory, robot)
    _, T_ref, pos, rot6d = _held_out_targets(robot, num_targets)
    kw = card_plan(loaded)
    stats, _ = _worst_end_effector_stats(loaded, robot, pos, rot6d, T_ref, kw, torch.Generator().manual_seed(0))
    return stats["pos_mm_median"]  # evaluate_checkpoint's draw (seed 0)


@torch.no_grad()
def held_out_one_sample(directory: Path, robot, num_targets: int) -> torch.Tensor:
    """(K,) bool: the held-out targets that one sample + LM solves with the checkpoint in ``directory``
    (:func:`one_sample_solved` on :func:`evaluate_checkpoint`'s targets), measured now."""
    from ikdiffuser_ros.model.checkpoint import load_checkpoint

    _, T_ref, _, _ = _held_out_targets(robot, num_targets)
    return one_sample_solved(load_checkpoint(directory, robot), robot, T_ref)


#: ``ship`` refuses a model that one sample + LM solves fewer held-out targets with than the shipped one, by more than
#: this many standard deviations of the difference (a paired, McNemar-style count on the same targets). One, not two:
#: shipping replaces a known model, so in doubt it keeps it (a model equal to the shipped one by chance is refused
#: about one time in six; the tail-weighted panda, 28 targets lost and 15 won, passed at two and is refused at one).
ONE_SAMPLE_MARGIN_SD = 1.0


def one_sample_regressed(new_ok: torch.Tensor, old_ok: torch.Tensor) -> bool:
    """Whether the new model (``new_ok`` (K,) bool, targets one sample + LM solves) loses significantly against the
    old one on the same targets: the targets only the old one solves outnumber those only the new one solves by
    more than :data:`ONE_SAMPLE_MARGIN_SD` x the square root of their sum (chance alone: a fair coin per target)."""
    lost, won = int((old_ok & ~new_ok).sum()), int((new_ok & ~old_ok).sum())
    return lost - won > ONE_SAMPLE_MARGIN_SD * math.sqrt(lost + won)


def _refusal(metrics: dict, dest: Path, robot, num_targets: int) -> str | None:
    """Why the staged model (its :func:`evaluate_checkpoint` ``metrics``) may not replace the one in ``dest``, or None:
    its held-out median must beat the shipped one's and one sample + LM must not solve significantly fewer targets
    (:func:`one_sample_regressed`); the shipped model measured now by the same code."""
    if not (dest / "model.safetensors").is_file():
        return None
    new_median, old_median = metrics["all_end_effectors"]["pos_mm_median"], held_out_median(dest, robot, num_targets)
    if new_median >= old_median:
        return f"held-out median {new_median:.1f} mm does not beat the shipped {old_median:.1f} mm"
    new_ok, old_ok = solved_targets(metrics["one_sample_lm"]), held_out_one_sample(dest, robot, num_targets)
    if one_sample_regressed(new_ok, old_ok):
        return (f"held-out median {new_median:.1f} mm beats the shipped {old_median:.1f} mm, but one sample + LM solves "
                f"{100 * new_ok.double().mean():.1f} % of the targets against the shipped model's "
                f"{100 * old_ok.double().mean():.1f} % ({int((old_ok & ~new_ok).sum())} lost, "
                f"{int((new_ok & ~old_ok).sum())} won)")
    return None


def _stage(run_dir: Path, staging: Path, card: dict, robot, weights_dtype: str, num_targets: int) -> dict:
    """The run's checkpoint with ``card`` in a fresh ``staging`` folder, its weights stored as ``weights_dtype``;
    returns its :func:`evaluate_checkpoint` metrics (the folder removed if that fails)."""
    from ikdiffuser_ros.model.checkpoint import store_weights_as

    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy(run_dir / "model.safetensors", staging)
    (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    try:
        store_weights_as(staging / "model.safetensors", weights_dtype)
        return evaluate_checkpoint(staging, robot, num_targets=num_targets)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def ship(run_dir: Path, dest: Path, steps: int, tail_steps: int, force: bool, num_targets: int,
         robot: str | None = None, weights_dtype: str = "float32", temperature: float = DEFAULT_TEMPERATURE
         ) -> dict | None:
    """Copy a run's checkpoint to ``dest`` with sampler defaults and learning curve if it beats the shipped one
    (its held-out raw median is lower and its one sample + LM success no worse, both models measured now:
    :func:`_refusal`). ``temperature``: the card's ``sampling.temperature``.

    ``robot``: a robot name or YAML (default :func:`robot_of_card`). ``weights_dtype``: how the denoiser's tensors
    are stored (``float16`` halves the file; the evaluation is of the stored weights). Returns its
    :func:`evaluate_checkpoint` metrics if shipped, else None."""
    from ikdiffuser_ros.robots import load_robot
    from ikdiffuser_ros.training.learning_curve import CURVE_FILE

    if not (run_dir / "card.json").is_file() or not (run_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run (no card.json and model.safetensors)")
    card = json.loads((run_dir / "card.json").read_text())
    model = load_robot(robot_of_card(card, robot))
    card["sampling"] = shipped_sampling(steps, tail_steps, temperature, len(model.end_effectors))
    staging = dest.with_name(dest.name + ".staging")
    metrics = _stage(run_dir, staging, card, model, weights_dtype, num_targets)
    refusal = None if force else _refusal(metrics, dest, model, num_targets)
    if refusal:
        print(f"not shipped: {refusal}")
        shutil.rmtree(staging)
        return None
    (staging / CURVE_FILE).write_text(lineage_curve(run_dir))
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    a = metrics["all_end_effectors"]
    print(f"shipped {run_dir} -> {dest}: held-out median {a['pos_mm_median']:.1f} mm, one sample + LM "
          f"{100 * metrics['one_sample_lm']['success']:.1f} %")
    return metrics


def _document(d: Path, card: dict, metrics: dict, reproduce: str | None) -> None:
    """``eval.json`` and ``README.md`` of the model folder ``d``."""
    (d / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    cmd = reproduce or card.get("training", {}).get("command", "")
    (d / "README.md").write_text(readme(card, metrics, cmd))


def _temperature(text: str) -> float:
    """``--temperature``: a number in (0, 1] (argparse's error otherwise, before anything is evaluated)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in (0, 1]")
    return value


def register(subparsers) -> None:
    """Add ``ship`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser(
        "ship", help="copy a training run into a model folder: card with sampler defaults, held-out evaluation, README",
        description="Copy the checkpoint of training run RUN into the model folder --out with the sampler defaults "
                    "in its card, its learning curve, its held-out evaluation (eval.json) and a README; refused "
                    "when --out already holds a model with a better held-out median, or one that one sample + LM "
                    "solves significantly more of the held-out targets with (unless --force).")
    p.add_argument("run", type=Path, help="training run folder (ikdiffuser train --out)")
    p.add_argument("--out", type=Path, required=True, help="model folder to write (e.g. models/<robot>)")
    p.add_argument("--robot", help="robot name or robot YAML (default: the one the run was trained with)")
    p.add_argument("--steps", type=int, default=SHIPPED_STEPS,
                   help=f"the card's default DDIM steps (default {SHIPPED_STEPS})")
    p.add_argument("--tail-steps", type=int, default=SHIPPED_TAIL_STEPS,
                   help=f"the card's default low-noise tail passes (default {SHIPPED_TAIL_STEPS})")
    p.add_argument("--temperature", type=_temperature, default=DEFAULT_TEMPERATURE,
                   help=f"the card's standard deviation of the sampler's initial noise, in (0, 1] (default "
                        f"{DEFAULT_TEMPERATURE:g})")
    p.add_argument("--num-targets", type=int, default=1000, help="held-out targets of the evaluation (default 1000)")
    p.add_argument("--force", action="store_true", help="replace --out even if its held-out error is better")
    p.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                   help="storage of the network's weights (float16 halves the file; computed in float32 after "
                        "loading; the evaluation is of the stored weights; default float32)")
    p.add_argument("--reproduce", default=None, help="command line to put in the README")
    p.set_defaults(func=_ship_main)


def _ship_main(args: argparse.Namespace) -> int:
    import sys

    from ikdiffuser_ros.errors import IKDiffuserError

    try:
        metrics = ship(args.run, args.out, args.steps, args.tail_steps, args.force, args.num_targets, args.robot,
                       args.weights_dtype, args.temperature)
    except (FileNotFoundError, IKDiffuserError) as exc:
        from ikdiffuser_ros.robots import RobotConfigError

        hint = " (pass --robot <robot name or YAML>)" if isinstance(exc, RobotConfigError) and not args.robot else ""
        print(f"ikdiffuser ship: error: {exc}{hint}", file=sys.stderr)
        return 2
    if metrics is None:
        return 1
    _document(args.out, json.loads((args.out / "card.json").read_text()), metrics, args.reproduce)
    a = metrics["all_end_effectors"]
    print(f"{args.out}: held-out raw median {a['pos_mm_median']:.1f} mm / {a['rot_deg_median']:.2f} deg "
          f"({metrics['sampler']}, {a['num_targets']} targets); eval.json, README.md written")
    return 0


def main(argv=None) -> int:
    from ikdiffuser_ros.robots import load_robot

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--robot", help="robot config name (default: the card's robot name)")
    ap.add_argument("--num-targets", type=int, default=1000)
    ap.add_argument("--write-readme", action="store_true")
    ap.add_argument("--reproduce", default=None, help="command line to put in the README")
    ap.add_argument("--ship", type=Path, help="copy the run CHECKPOINT into this models/<robot> folder if it is better")
    ap.add_argument("--steps", type=int, default=SHIPPED_STEPS, help="--ship: the card's default DDIM steps")
    ap.add_argument("--tail-steps", type=int, default=SHIPPED_TAIL_STEPS,
                    help="--ship: the card's default low-noise tail passes")
    ap.add_argument("--temperature", type=_temperature, default=DEFAULT_TEMPERATURE,
                    help="--ship: the card's temperature")
    ap.add_argument("--force", action="store_true", help="--ship even if the held-out error is not better")
    args = ap.parse_args(argv)
    d = Path(args.checkpoint)
    if args.ship:
        metrics = ship(d, args.ship, args.steps, args.tail_steps, args.force, args.num_targets, args.robot,
                       temperature=args.temperature)
        if metrics is None:
            return 1
        d, args.write_readme = args.ship, True
    card = json.loads((d / "card.json").read_text())
    if not args.ship:
        metrics = evaluate_checkpoint(d, load_robot(robot_of_card(card, args.robot)), num_targets=args.num_targets)
    print(json.dumps(metrics, indent=2))
    if args.write_readme:
        _document(d, card, metrics, args.reproduce)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
