"""The one IK pipeline, without ROS: queries, planning groups and locked joints, tips, the success
test, constraints, exact collision filtering, rounds, ordering and errors (shipped models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ikdiffuser_ros.errors import (CollisionCheckingUnavailableError, InvalidGoalError, InvalidRequestError,
                                   InvalidRobotStateError, UnknownFrameError, UnknownGroupError, UnknownLinkError)
from ikdiffuser_ros.query import IKQuery, IKTarget, JointBounds, Status


def _reachable(robot, k: int, seed: int = 0, spread: float = 0.6) -> np.ndarray:
    """(k, n) configurations near the default state (mostly free of self collision), inside the limits."""
    g = torch.Generator().manual_seed(seed)
    q0 = robot.default_positions()
    q = q0 + spread * (torch.rand(k, robot.n_joints, generator=g, dtype=torch.float64) - 0.5) * 2
    return torch.minimum(torch.maximum(q, robot.lower), robot.upper).numpy()


def _fk(robot, q, links):
    return robot.fk_links(torch.as_tensor(q), list(links)).numpy()


def _all_ee_target(robot, q) -> IKTarget:
    return IKTarget(list(robot.end_effectors), list(robot.fk(torch.as_tensor(q)).numpy()))


def test_answers_are_measured_at_the_named_links(baxter_pipeline):
    """A TCP-like link rigidly attached to the gripper: tolerances hold there (independent FK)."""
    pl = baxter_pipeline
    robot = pl.robot
    q = _reachable(robot, 2, seed=1)
    links = ["left_hand_link", "right_gripper"]
    assert not np.allclose(pl.tips["left_hand_link"][1][:3, 3], 0), "an offset tip"
    targets = [IKTarget(links, list(_fk(robot, qi, links))) for qi in q]
    answer = pl.answer(IKQuery(targets, num_solutions=16, random_seed=0))
    tol = pl.solver.config.refine
    for t, target in zip(answer.targets, targets):
        assert t.status is Status.SOLVED and len(t.q) > 0 and t.valid.all()
        T = _fk(robot, t.q, links)  # (k, 2, 4, 4)
        pos = np.linalg.norm(T[..., :3, 3] - np.stack(target.poses)[:, :3, 3], axis=-1).max(-1)
        assert (pos <= tol.pos_tol * (1 + 1e-6)).all()
        assert np.allclose(pos, t.position_error, atol=1e-9)


def test_group_locks_other_joints_and_holds_unnamed_tips(dual_pipeline):
    """MoveIt semantics without rclpy: a group moves only its joints; its tips without a pose stay put."""
    pl = dual_pipeline
    robot = pl.robot
    q = _reachable(robot, 3, seed=2, spread=0.4)
    seed = q[0]
    for name, links in (("left_arm", ["left_tool0"]), ("both_arms", ["left_tool0"]),
                        ("whole_body", ["left_tool0", "right_tool0"])):
        group = pl.groups[name]
        T = _fk(robot, q[1], links)
        answer = pl.answer(IKQuery([IKTarget(links, list(T))], num_solutions=8, group=name, seed=seed, timeout=5.0))
        [t] = answer.targets
        assert t.status is Status.SOLVED, (name, t.message)
        held = [i for i in range(robot.n_joints) if i not in group.joints]
        assert np.allclose(t.q[:, held], seed[held], atol=1e-9), name
        assert np.allclose(_fk(robot, t.q[0], links)[:, :3, 3], T[:, :3, 3], atol=1e-4), name
        unnamed = [tip for tip in group.tips if tip not in links]
        if unnamed:  # e.g. both_arms asked only for the left tool: the right one keeps its seed pose
            assert np.allclose(_fk(robot, t.q[0], unnamed), _fk(robot, seed, unnamed), atol=1e-4), name


def test_locked_joints_do_not_move(baxter_pipeline):
    pl = baxter_pipeline
    robot = pl.robot
    q = _reachable(robot, 1, seed=3)[0]
    locked = {"left_s0": float(q[robot.index_of("left_s0")]), "right_e1": float(q[robot.index_of("right_e1")])}
    answer = pl.answer(IKQuery([_all_ee_target(robot, q)], num_solutions=8, locked=locked, timeout=5.0))
    [t] = answer.targets
    assert t.status is Status.SOLVED, t.message
    for name, value in locked.items():
        assert np.all(t.q[:, robot.index_of(name)] == value)


def test_collision_free_answers_and_constraints(baxter_pipeline):
    pl = baxter_pipeline
    robot = pl.robot
    q = _reachable(robot, 2, seed=4, spread=0.3)
    assert not pl.checker.check(q).in_collision.any()
    answer = pl.answer(IKQuery([_all_ee_target(robot, qi) for qi in q], num_solutions=12, avoid_collisions=True,
                               timeout=5.0))
    for t in answer.targets:
        assert t.status is Status.SOLVED and not t.in_collision.any()
        assert not pl.checker.check(t.q).in_collision.any()  # an independent re-check
    i = robot.index_of("left_w1")
    bound = JointBounds("left_w1", float(q[0, i]) - 0.3, float(q[0, i]) + 0.3)
    [t] = pl.answer(IKQuery([_all_ee_target(robot, q[0])], num_solutions=8, constraints=[bound], timeout=5.0)).targets
    assert t.status is Status.SOLVED and np.all((t.q[:, i] >= bound.lower) & (t.q[:, i] <= bound.upper))


def test_reported_collisions_are_checked_for_the_answers_rows_only(baxter_pipeline, monkeypatch):
    """A query that reports collisions without avoiding them checks the rows it returns, in one batch after the
    ranking, not every valid row it found (FCL ~0.15 ms a row: a 1 x 32 query within 10 ms found 17 solutions when it
    checked them all); the flags are those of an independent check."""
    pl = baxter_pipeline
    q = _reachable(pl.robot, 3, seed=31, spread=0.9)
    checked, check_until = [], pl.checker.check_until

    def recording(rows, *args, **kwargs):
        checked.append(len(rows))
        return check_until(rows, *args, **kwargs)

    monkeypatch.setattr(pl.checker, "check_until", recording)
    answer = pl.answer(IKQuery([_all_ee_target(pl.robot, qi) for qi in q], num_solutions=6, report_collisions=True,
                               timeout=5.0, random_seed=4))
    assert checked == [sum(len(t.q) for t in answer.targets)] and checked[0] <= 18
    flags = np.concatenate([t.in_collision for t in answer.targets])
    assert np.array_equal(flags, pl.checker.check(np.concatenate([t.q for t in answer.targets])).in_collision)


def test_seed_orders_answers_and_same_seed_same_answer(baxter_pipeline):
    pl = baxter_pipeline
    robot = pl.robot
    q = _reachable(robot, 1, seed=5)[0]
    query = IKQuery([_all_ee_target(robot, q)], num_solutions=16, seed=q, random_seed=7)
    a, b = pl.answer(query), pl.answer(query)
    assert np.array_equal(a.targets[0].q, b.targets[0].q)
    d = np.linalg.norm(a.targets[0].q - q, axis=-1)
    assert np.all(np.diff(d) >= -1e-12), "closest to the seed first"


def test_rounds_resample_targets_without_solutions(baxter_pipeline):
    """One sample per target: later rounds re-sample only the targets still without a valid solution (64 targets,
    so that some fail the first round: one sample + LM solves ~92 % of them on the shipped model)."""
    pl = baxter_pipeline
    robot = pl.robot
    targets = [_all_ee_target(robot, qi) for qi in _reachable(robot, 64, seed=6, spread=1.5)]
    one = pl.answer(IKQuery(targets, num_solutions=1, max_rounds=1, random_seed=1))
    more = pl.answer(IKQuery(targets, num_solutions=1, max_rounds=6, random_seed=1))
    solved = lambda a: sum(t.status is Status.SOLVED for t in a.targets)  # noqa: E731
    assert solved(one) < len(targets), "some targets need another round"
    assert solved(more) > solved(one)
    for t_one, t_more in zip(one.targets, more.targets):
        if t_one.status is Status.SOLVED:  # solved in round 0: the same answer
            assert np.array_equal(t_one.q, t_more.q)


def test_errors_of_targets_and_queries(baxter_pipeline):
    pl = baxter_pipeline
    robot = pl.robot
    good = _all_ee_target(robot, _reachable(robot, 1, seed=8)[0])
    T = good.poses[0]
    bad = {
        "no_such_link": (IKTarget(["no_such_link"], [T]), UnknownLinkError),
        "not attached": (IKTarget(["left_lower_forearm"], [T]), UnknownLinkError),
        "frame": (IKTarget(["left_gripper"], [T], ["no_such_frame"]), UnknownFrameError),
        "twice": (IKTarget(["left_gripper", "left_hand_link"], [T, T]), InvalidGoalError),
        "lengths": (IKTarget(["left_gripper"], [T, T]), InvalidGoalError),
        "quaternion": (IKTarget(["left_gripper"], [[0, 0, 0, 0, 0, 0, 0]]), InvalidGoalError),
        "nan": (IKTarget(["left_gripper"], [[math.nan, 0, 0, 0, 0, 0, 1]]), InvalidGoalError),
        "not a pose": (IKTarget(["left_gripper"], ["up there"]), InvalidGoalError),
        "scaled rotation": (IKTarget(["left_gripper"], [np.diag([1.1, 1.1, 1.1, 1.0]) @ T]), InvalidGoalError),
        "reflection": (IKTarget(["left_gripper"], [np.diag([1.0, 1.0, -1.0, 1.0]) @ T]), InvalidGoalError),
    }
    answer = pl.answer(IKQuery([good] + [t for t, _ in bad.values()], num_solutions=4, timeout=5.0))
    assert answer.targets[0].status is Status.SOLVED, "one bad target does not spoil the others"
    for t, (name, (_, cls)) in zip(answer.targets[1:], bad.items()):
        assert t.status is Status.INVALID and isinstance(t.error, cls), name
    with pytest.raises(UnknownLinkError) as info:
        raise answer.targets[1].error
    assert "left_gripper" in str(info.value) and info.value.valid
    # a length mismatch names the counts that are wrong, not the ones derived from them (frames of poses)
    assert answer.targets[5].message == "target 5: 1 link names but 2 poses (poses: one per link name)"
    for query, cls in ((IKQuery([]), InvalidRequestError), (IKQuery([good], num_solutions=0), InvalidRequestError),
                       (IKQuery([good], objectives={"speed": 1.0}), InvalidRequestError),
                       (IKQuery([good], objectives={"seed": 1.0}), InvalidRequestError),
                       (IKQuery([good], seed=np.zeros(3)), InvalidRobotStateError),
                       (IKQuery([good], locked={"nope": 0.0}), InvalidRobotStateError),
                       (IKQuery([good], group="nope"), UnknownGroupError),
                       (IKQuery([good], constraints=[JointBounds("nope", 0, 1)]), InvalidGoalError),
                       (IKQuery([good], timeout=-1.0), InvalidRequestError),
                       (IKQuery([good], timeout="1"), InvalidRequestError),
                       (IKQuery([good], delivery_s_per_solution=-1e-5), InvalidRequestError),
                       (IKQuery([good], delivery_s_per_solution=math.nan), InvalidRequestError),
                       (IKQuery([good], seed="abc"), InvalidRobotStateError),
                       (IKQuery([good], locked={"left_s0": "x"}), InvalidRobotStateError)):
        with pytest.raises(cls):
            pl.answer(query)
    with pytest.raises(UnknownLinkError):  # a link outside the group
        [t] = pl.answer(IKQuery([IKTarget(["right_gripper"], [T])], group="left_arm", timeout=5.0)).targets
        raise t.error


def test_targets_validated_together_get_what_one_at_a_time_gives(baxter_pipeline):
    """Targets that share links, frames and flags are validated and composed in one pass: the same end-effector
    poses, masks and tip points as one target at a time, and a malformed one among them gets its own error."""
    pl = baxter_pipeline
    qs = _reachable(pl.robot, 6, seed=21)
    poses = _fk(pl.robot, qs, ["left_hand_camera_link", "right_gripper"])  # (6, 2, 4, 4): a link with an offset
    quat = lambda T: list(T[:3, 3]) + list(Rotation.from_matrix(T[:3, :3]).as_quat())  # noqa: E731
    targets = [IKTarget(["left_hand_camera_link", "right_gripper"], [quat(T) for T in Ts], ["", "torso"],
                        [False, True]) for Ts in poses]
    targets[2].poses[0][6] = math.nan
    targets[4].poses[1][3:] = [0, 0, 0, 0]
    targets += [IKTarget(["left_hand_camera_link"], [T[0]]) for T in poses[:3]]  # 4 x 4 matrices, a second batch
    targets[-1].poses[0] = np.diag([1.0, 1.0, -1.0, 1.0]) @ targets[-1].poses[0]
    query, group = IKQuery(targets), pl.groups["both_arms"]
    q_ref, T_ref = pl.default_state, pl._fk(pl.default_state)
    together = pl._specs(query, group, q_ref, T_ref)
    for b, (target, spec) in enumerate(zip(targets, together)):
        alone = pl._spec_or_error(target, group, q_ref, T_ref, f"target {b}", {})
        assert type(spec) is type(alone), b
        if isinstance(alone, Exception):
            assert str(spec) == str(alone) and b in (2, 4, 8)
            continue
        for name in ("T", "mask", "position_only", "tip_points", "box_frames", "box_bounds"):
            assert np.allclose(getattr(spec, name), getattr(alone, name), rtol=0, atol=1e-12), (b, name)


def test_objective_aliases_and_no_checker(baxter_pipeline):
    from ikdiffuser_ros.pipeline import IKPipeline

    pl = baxter_pipeline
    q = _reachable(pl.robot, 1, seed=9)[0]
    target = _all_ee_target(pl.robot, q)
    [t] = pl.answer(IKQuery([target], num_solutions=4, seed=q, objectives={"seed_distance": 1.0,
                                                                            "joint_limit_margin": 0.5})).targets
    assert t.status is Status.SOLVED
    with pytest.raises(CollisionCheckingUnavailableError):
        IKPipeline(pl.solver).answer(IKQuery([target], avoid_collisions=True))


def test_same_query_same_answer_cold_or_warm(baxter_pipeline):
    """With a generous budget the solver calls depend on the query alone, not on the throughput a
    pipeline has measured before: a fresh pipeline and a used one give the same answer."""
    from ikdiffuser_ros.pipeline import IKPipeline

    pl = baxter_pipeline
    targets = [_all_ee_target(pl.robot, qi) for qi in _reachable(pl.robot, 12, seed=12)]
    query = IKQuery(targets, num_solutions=48, random_seed=3, timeout=60.0)  # 576 rows: several calls
    warm = pl.answer(query)
    cold = IKPipeline(pl.solver, pl.checker, pl.config, pl.groups).answer(query)
    for a, b in zip(warm.targets, cold.targets):
        assert a.status is b.status and np.array_equal(a.q, b.q)


def test_warmup_leaves_the_loaded_objects_out_of_the_collectors_scans(baxter_pipeline):
    """After the warm-up the objects alive then (modules, model, robot: ~265 k) are frozen, so a full garbage
    collection in the middle of a request does not scan them (it took 70-210 ms and the answer came that late)."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    baxter_pipeline.warmup()
    assert gc.get_freeze_count() > 100_000


def test_targets_in_an_external_frame(baxter_pipeline):
    """A pose in a frame outside the robot (``world``, given by the caller as T_root_world) is the same
    target as that pose mapped into the root frame; an unknown external frame lists the known ones."""
    pl = baxter_pipeline
    q = _reachable(pl.robot, 1, seed=12)[0]
    T_root = pl.robot.fk(torch.as_tensor(q)).numpy()[0]
    T_root_world = np.eye(4)
    T_root_world[:3, 3] = (0.3, -0.2, 0.1)
    c, s = np.cos(0.4), np.sin(0.4)
    T_root_world[:2, :2] = [[c, -s], [s, c]]
    in_world = np.linalg.inv(T_root_world) @ T_root
    query = IKQuery([IKTarget(["left_gripper"], [in_world], ["world"])], num_solutions=4, timeout=5.0,
                    external_frames={"world": T_root_world}, random_seed=0)
    [t] = pl.answer(query).targets
    assert t.status is Status.SOLVED
    T = _fk(pl.robot, t.q, ["left_gripper"])[:, 0]
    assert np.abs(T[:, :3, 3] - T_root[:3, 3]).max() < 1e-5
    [t] = pl.answer(IKQuery([IKTarget(["left_gripper"], [in_world], ["map"])], external_frames={"world": T_root_world},
                            timeout=5.0)).targets
    assert t.status is Status.INVALID and isinstance(t.error, UnknownFrameError) and "world" in str(t.error)


def test_tight_joint_constraints_bound_the_lm(dual_pipeline):
    """Joint constraints narrow the LM's box, so answers meet them by construction: three tight bounds
    still give all 16 solutions (as a filter after the LM they gave none in 10 s)."""
    pl = dual_pipeline
    robot = pl.robot
    q = _reachable(robot, 1, seed=21, spread=0.4)[0]
    target = IKTarget(["left_tool0"], [_fk(robot, q[None], ["left_tool0"])[0, 0]])
    names = ("base_joint/x", "waist_joint", "left_shoulder_pan_joint")
    bounds = [JointBounds(n, q[robot.index_of(n)] - 0.02, q[robot.index_of(n)] + 0.05) for n in names]
    [t] = pl.answer(IKQuery([target], num_solutions=16, constraints=bounds, timeout=10.0, random_seed=0)).targets
    assert t.status is Status.SOLVED and len(t.q) == 16 and t.valid.all()
    for b in bounds:
        v = t.q[:, robot.index_of(b.joint)]
        assert np.all((v >= b.lower - 1e-9) & (v <= b.upper + 1e-9)), b.joint


def _solver_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every ``IKDiffuserSolver.run`` call from now on (each call still runs); a sampled
    call's ``q0`` is None."""
    from ikdiffuser_ros.solver import IKDiffuserSolver

    calls, run = [], IKDiffuserSolver.run

    def spy(self, batch, *args, **kwargs):
        calls.append(kwargs)
        return run(self, batch, *args, **kwargs)

    monkeypatch.setattr(IKDiffuserSolver, "run", spy)
    return calls


def _sampled(calls: list[dict], key: str) -> list:
    """``key`` of each sampled call among ``calls``."""
    return [c.get(key) for c in calls if c.get("q0") is None]


def test_only_a_generous_diverse_query_repels_its_first_call(monkeypatch):
    """The repulsion (~4x the cost per row) runs in the first solver call of a diverse query when at least
    generous_budget is left: a 1 s query for 32 solutions repels once, a 0.1 s one never; likewise only the
    generous one starts restarts from uniform draws (in every call)."""
    from ikdiffuser_ros.pipeline import IKPipeline, IKQuery, IKTarget

    pipeline = IKPipeline.from_robot("panda", collision=False, warmup=False)
    runs = _solver_calls(monkeypatch)
    T = pipeline.robot.fk(pipeline.robot.default_positions()[None])[0].numpy()
    for timeout, expected in ((1.0, True), (0.1, False)):
        runs.clear()
        answer = pipeline.answer(IKQuery([IKTarget(pipeline.robot.end_effectors, list(T))], num_solutions=32,
                                         timeout=timeout, max_rounds=3))
        calls, uniform = _sampled(runs, "repel"), _sampled(runs, "uniform")
        assert answer.targets[0].valid.any()
        assert calls[0] is expected and not any(calls[1:])
        assert all(u is expected for u in uniform)


def test_one_solution_samples_at_the_cards_temperature_several_at_one(monkeypatch):
    """A query for one solution (MoveIt's) samples at the card's ``sampling.temperature`` (the solver's default:
    typical samples, which one LM finishes more often); a query for several at 1, so its answers spread."""
    from ikdiffuser_ros.pipeline import IKPipeline, IKQuery, IKTarget

    pipeline = IKPipeline.from_robot("panda", collision=False, warmup=False)
    assert pipeline.solver.temperature_of() == pipeline.solver.loaded.card["sampling"]["temperature"] < 1
    runs = _solver_calls(monkeypatch)
    T = pipeline.robot.fk(pipeline.robot.default_positions()[None])[0].numpy()
    for num, expected in ((1, None), (8, 1.0)):
        runs.clear()
        answer = pipeline.answer(IKQuery([IKTarget(pipeline.robot.end_effectors, list(T))], num_solutions=num,
                                         timeout=1.0, max_rounds=2))
        used = [c.get("temperature") for c in runs]
        assert answer.targets[0].valid.any() and used and all(t == expected for t in used)


def test_a_harvest_samples_with_the_cards_harvest_steps(monkeypatch):
    """A diverse ask larger than the answer's order ranks (a harvest, every valid solution counted) samples with the
    card's ``sampling.harvest_steps``; a query whose pool the order ranks (100 solutions) keeps the diverse plan, a
    query for one solution the card's LM-ready plan, and a card without harvest steps leaves harvests the diverse
    plan too."""
    from ikdiffuser_ros.pipeline import IKPipeline, IKQuery, IKTarget

    pipeline = IKPipeline.from_robot("panda", collision=False, warmup=False)
    sampling = pipeline.solver.loaded.card["sampling"]
    assert sampling["harvest_steps"] < pipeline.solver.config.diverse_steps
    runs = _solver_calls(monkeypatch)
    T = pipeline.robot.fk(pipeline.robot.default_positions()[None])[0].numpy()
    cases = ((300, 0.3, sampling["harvest_steps"]), (100, 0.3, None), (1, 0.05, None))
    for num, timeout, expected in cases:
        runs.clear()
        pipeline.answer(IKQuery([IKTarget(pipeline.robot.end_effectors, list(T))], num_solutions=num, timeout=timeout))
        used = _sampled(runs, "steps")
        assert used and all(s == expected for s in used), (num, used)
    pipeline.solver.loaded.card = {**pipeline.solver.loaded.card,
                                   "sampling": {k: v for k, v in sampling.items() if k != "harvest_steps"}}
    runs.clear()
    pipeline.answer(IKQuery([IKTarget(pipeline.robot.end_effectors, list(T))], num_solutions=300, timeout=0.3))
    used = _sampled(runs, "steps")
    assert used and all(s is None for s in used)


def test_automatic_diversity_needs_a_budget_but_the_answer_still_comes_spread(baxter_pipeline):
    """diversity None: 1 for 16 solutions or more within diverse_min_budget or more, else 0 (1 x 32 within 10 ms
    wants its 32 solutions first); the farthest-point order stays for such a tight query, not for a seeded one
    or one asking fewer solutions; an explicit diversity is kept whatever the budget."""
    pl = baxter_pipeline
    target = _all_ee_target(pl.robot, _reachable(pl.robot, 1, seed=11)[0])
    tight, enough = 0.5 * pl.config.diverse_min_budget, pl.config.diverse_min_budget
    plan = lambda **kw: pl._plan(IKQuery([target], **kw), 0.0)  # noqa: E731
    assert (plan(num_solutions=32, timeout=enough).diversity, plan(num_solutions=32, timeout=enough).spread_first) \
        == (1.0, True)
    assert (plan(num_solutions=32, timeout=tight).diversity, plan(num_solutions=32, timeout=tight).spread_first) \
        == (0.0, True)
    assert plan(num_solutions=32, timeout=tight, diversity=0.5).diversity == 0.5
    assert not plan(num_solutions=8, timeout=enough).spread_first and plan(num_solutions=8, timeout=enough).diversity == 0
    seeded = plan(num_solutions=32, timeout=tight, seed=pl.default_state)
    assert seeded.diversity == 0.0 and not seeded.spread_first


def test_diverse_answers_come_farthest_point_first(baxter_pipeline):
    """A diverse query without objectives or seed: its distinct valid answers come farthest point first (each
    the farthest of the rest from those before it), so any prefix is spread out; asked plainly (diversity
    0) they come by the ranking key, the position error."""
    from ikdiffuser_ros.sampling.dedup import squared_distances

    pl = baxter_pipeline
    robot = pl.robot
    target = _all_ee_target(robot, _reachable(robot, 1, seed=11)[0])
    [a] = pl.answer(IKQuery([target], num_solutions=24, random_seed=3, timeout=5.0)).targets
    assert a.valid.sum() >= 12
    q = torch.as_tensor(a.q[a.valid])
    d2 = squared_distances(q, pl.solver.wrapping).numpy()
    for i in range(2, len(q)):
        nearest = d2[:i].min(0)  # of each answer, to those before the i-th
        assert nearest[i] >= nearest[i:].max() - 1e-9, f"answer {i} is not the farthest of the rest"
    [plain] = pl.answer(IKQuery([target], num_solutions=24, random_seed=3, timeout=5.0, diversity=0.0)).targets
    pe = plain.position_error[plain.valid]
    assert np.all(np.diff(pe) >= 0)


def test_a_large_answer_does_not_shorten_the_next_small_query(baxter_pipeline):
    """The time kept for ranking is measured per answer size: after ranking 512 solutions (tens of ms) a
    one-solution query of 10 ms still searches for almost all of it (it was left a deadline in the past:
    TIMED_OUT), and no measurement keeps more than half of a query's timeout."""
    import time

    from ikdiffuser_ros.call_costs import RateBySize
    from ikdiffuser_ros.pipeline import FINISH_MAX_SHARE

    pl = baxter_pipeline
    target = _all_ee_target(pl.robot, _reachable(pl.robot, 1, seed=12)[0])
    pl.answer(IKQuery([target], num_solutions=512, timeout=1.0, diversity=0.0, random_seed=1))
    small = IKQuery([target], num_solutions=1, timeout=0.01)
    t0 = time.monotonic()
    assert pl._plan(small, t0).deadline - t0 >= 0.01 - 0.002
    key, slow = pl._finish_key(small, False), RateBySize(0.3)
    slow.record(1, 1.0)
    kept, pl._finish_costs[key] = pl._finish_costs.get(key), slow
    try:
        assert pl._plan(small, t0).deadline - t0 == pytest.approx((1 - FINISH_MAX_SHARE) * 0.01)
    finally:
        pl._finish_costs.pop(key)
        if kept is not None:
            pl._finish_costs[key] = kept
    assert pl.answer(small).targets[0].status is not Status.TIMED_OUT


def test_the_time_kept_for_ranking_follows_its_measurements(baxter_pipeline):
    """The ranking's reserve is FINISH_MARGIN x the running mean of its measurements per target for answers of as
    many targets (to the next power of two), at least FINISH_MIN_S: one target's ranking (mostly fixed cost) does not
    set what 64 targets keep (2-4 ms kept for a ranking of 0.7-0.9 ms), and an answer of a size not measured yet keeps
    the rate of the nearest smaller one."""
    import time

    from ikdiffuser_ros.call_costs import RateBySize
    from ikdiffuser_ros.pipeline import FINISH_EMA, FINISH_MARGIN, FINISH_MIN_S

    pl = baxter_pipeline
    targets = [_all_ee_target(pl.robot, x) for x in _reachable(pl.robot, 64, seed=14)]
    query = IKQuery(targets, num_solutions=1, timeout=0.05, random_seed=2)
    key = pl._finish_key(query, False)
    before, pl._finish_costs[key] = pl._finish_costs.get(key), RateBySize(FINISH_EMA)
    try:
        pl._finish_costs[key].record(1, 2e-4)
        assert pl._plan(query, time.monotonic()).reserve == pytest.approx(FINISH_MARGIN * 64 * 2e-4)  # one's rate
        pl._finish_costs[key].record(64, 8e-4)
        assert pl._plan(query, time.monotonic()).reserve == pytest.approx(FINISH_MARGIN * 8e-4)
        assert pl._plan(IKQuery(targets[:1], num_solutions=1, timeout=0.05), time.monotonic()).reserve == pytest.approx(
            FINISH_MARGIN * 2e-4)
        pl._finish_costs[key] = RateBySize(FINISH_EMA)
        pl._finish_costs[key].record(64, 1e-7)
        assert pl._plan(query, time.monotonic()).reserve == pytest.approx(FINISH_MIN_S)  # the floor
        t0, kept = time.monotonic(), pl._finish_costs[key].rates[(64).bit_length()]
        assert len(pl.answer(query).targets) == 64
        took = (time.monotonic() - t0) / 64  # more than the ranking alone
        rate = pl._finish_costs[key].rates[(64).bit_length()]
        assert (1 - FINISH_EMA) * kept < rate <= (1 - FINISH_EMA) * kept + FINISH_EMA * took
    finally:
        pl._finish_costs.pop(key)
        if before is not None:
            pl._finish_costs[key] = before


def test_a_large_request_keeps_delivery_time_for_what_it_found_not_for_all_it_asked(baxter_pipeline):
    """The caller's time per returned solution (the node's messages) is kept for the rows found: 8 targets x 512
    solutions within 0.1 s at 20 us each (82 ms for all 4096) still answer with solutions (the whole budget kept
    for 4096 of them left the search 18 ms: none), and the rounds end in time to deliver what they found."""
    import time

    pl = baxter_pipeline
    per_row, budget = 2e-5, 0.1
    targets = [_all_ee_target(pl.robot, x) for x in _reachable(pl.robot, 8, seed=13)]
    query = IKQuery(targets, num_solutions=512, timeout=budget, diversity=0.0, delivery_s_per_solution=per_row)
    t0 = time.monotonic()
    plan = pl._plan(query, t0)
    assert plan.deadline == pytest.approx(plan.end - plan.reserve), "nothing found yet: nothing to deliver yet"
    assert plan.end - plan.reserve - t0 >= 0.5 * budget - 1e-9
    plan.returnable = 1000
    assert plan.deadline == pytest.approx(plan.end - plan.reserve - 1000 * per_row)
    answer = pl.answer(query)
    found = sum(len(t.q) for t in answer.targets)
    assert found > 0
    assert answer.solve_time + per_row * found <= budget + 0.02, (answer.solve_time, found)


def test_a_diverse_query_chooses_its_answers_among_more_candidates(baxter_pipeline, monkeypatch):
    """With a generous budget a diverse query collects diverse_pool x num_solutions valid candidates before
    its rounds stop (and answers num_solutions of them, farthest point first); a plain one, one with a
    tight budget, or a harvest whose pool would exceed what the order ranks, stops near num_solutions."""
    from ikdiffuser_ros.pipeline import IKPipeline

    pl = baxter_pipeline
    target = _all_ee_target(pl.robot, _reachable(pl.robot, 1, seed=13)[0])
    collected = []
    finish = IKPipeline._finish

    def spy(self, plan, pools):
        collected.extend(pool.valid_count for pool in pools)
        return finish(self, plan, pools)

    monkeypatch.setattr(IKPipeline, "_finish", spy)
    for diversity in (None, 0.0):
        [a] = pl.answer(IKQuery([target], num_solutions=64, random_seed=2, timeout=5.0, diversity=diversity)).targets
        assert len(a.q) == 64 and a.valid.all()
    assert collected[0] >= pl.config.diverse_pool * 64 > collected[1] >= 64, collected
    tight = IKQuery([target], num_solutions=64, timeout=0.5 * pl.config.generous_budget)
    assert pl._plan(tight, 0.0).wanted == 64, "a tight budget stays on the fast path"
    harvest = pl._plan(IKQuery([target], num_solutions=512, timeout=5.0), 0.0)
    assert harvest.spread_first and not harvest.cover and harvest.wanted == 512, "a harvest keeps converging restarts"
    assert pl._plan(IKQuery([target], num_solutions=100, timeout=5.0), 0.0).cover


def test_rounds_count_distinct_solutions_and_stop_when_none_are_new():
    """A target's rounds count distinct valid candidates (the solver's dedup_tol), so a UR5 asked for 16
    solutions within 0.2 s answers 16 distinct ones (it stopped at 16 valid rows with a fifth of them
    repeats); a Kinova JACO2 target, with only a handful of solutions, stops long before a 3 s timeout once
    calls bring no new one, its distinct solutions first and repeats after them."""
    import time

    from ikdiffuser_ros.pipeline import IKPipeline
    from ikdiffuser_ros.sampling.dedup import unique_mask

    for robot, num, timeout in (("ur5", 16, 0.2), ("kinova", 32, 3.0)):
        pl = IKPipeline.from_robot(robot, collision=False)
        wrap, tol = pl.solver.wrapping, pl.solver.config.dedup_tol
        for seed in (1, 2, 3):
            target = _all_ee_target(pl.robot, _reachable(pl.robot, 1, seed=seed)[0])
            t0 = time.monotonic()
            [a] = pl.answer(IKQuery([target], num_solutions=num, random_seed=seed, timeout=timeout)).targets
            took = time.monotonic() - t0
            q = torch.as_tensor(a.q[a.valid])
            distinct = unique_mask(q, None, tol, wrap)
            if robot == "ur5":
                assert len(q) == num and distinct.all(), f"{int(distinct.sum())} distinct of {len(q)}"
            else:
                assert took < 1.0 and 2 <= int(distinct.sum()) < num, (took, int(distinct.sum()))
                assert distinct[: int(distinct.sum())].all(), "the distinct solutions lead"



def test_a_seed_objective_with_many_solutions_samples_fewer_rows_than_it_refines(baxter_pipeline):
    """32 solutions ranked by the seed objective: each call samples a quarter of its rows (restarts) guided by the
    seed's cost, then refines them all. It raised a RuntimeError (10 rows against 40) when the cost held one seed
    row per refined row."""
    pl = baxter_pipeline
    q = _reachable(pl.robot, 1, seed=4)[0]
    [t] = pl.answer(IKQuery([_all_ee_target(pl.robot, q)], num_solutions=32, seed=q + 0.05,
                            objectives={"seed_distance": 1.0}, timeout=1.0, max_rounds=2)).targets
    assert t.status is Status.SOLVED and t.valid.all() and len(t.q) >= 8
