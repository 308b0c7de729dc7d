"""docs/your_robot.md end to end, on a robot that is not shipped (example-robot-data's UR3), in a temporary folder:

    ikdiffuser init-robot --urdf <UR3> --end-effectors tool0 --out-dir DIR
    ikdiffuser train --robot DIR/ur3.yaml ...        (the training config next to the YAML, tiny overrides added)
    ikdiffuser ship RUN --out MODEL
    ros2 launch ikdiffuser_ros ikdiffuser.launch.py robot:=DIR/ur3.yaml model_path:=MODEL

then ``compute_ik`` (group ``arm``, written by init-robot) and ``get_ik_solutions`` (collision free, so the
sphere file next to the YAML is used) answer, and so does the docs' ``ros2 service call`` run as written
(when ros2service is installed), every returned joint state checked by forward kinematics.
The model is tiny and barely trained: the LM refinement does the work, which is what this checks (the
path from a URDF to answers, not model quality). Each step runs as the documented command, in a subprocess.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ik_helpers import REPO, pose_stamped
from test_launch_process import (LAUNCH_MISSING, Launched, assert_clean_sigint, call, client,  # noqa: F401
                                 node_parameters)

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(LAUNCH_MISSING is not None, reason=f"launch/ros2cli not installed ({LAUNCH_MISSING})"),
]

DOC = REPO / "docs" / "your_robot.md"
UR3 = "package://example-robot-data/robots/ur_description/urdf/ur3_robot.urdf"
#: appended to the written ur3.training.yaml (docs/your_robot.md: "add overrides below it"): seconds, not hours
TINY = """
model: {d_model: 64, n_blocks: 2}
dataset_size: 2000
batch_size: 128
warmup_steps: 20
max_steps: 200
eval_every: 100
ckpt_every: 100
log_every: 50
eval_samples: 64
"""
STEP_S = 180.0  # one command on a loaded 2-core CPU


def run(argv: list[str], cwd: Path) -> str:
    """Run one documented command; its output (it must exit 0)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=STEP_S, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{' '.join(argv)} exited {res.returncode}:\n{out}"
    return out


def free_reachable_pose(model, seed: int = 0):
    """(q, tool0 pose (4, 4)) of a configuration free of self collision (exact FCL), uniform within the limits."""
    import torch

    from ikdiffuser_ros.collision.fcl_checker import CollisionChecker

    g = torch.Generator().manual_seed(seed)
    lo, hi = model.limits()
    q = lo + (hi - lo) * torch.rand(64, model.n_joints, generator=g, dtype=torch.float64)
    free = np.flatnonzero(CollisionChecker(model).check(q).free)
    assert free.size, "no collision-free configuration among 64"
    q = q[int(free[0])]
    return q, model.fk(q).numpy()[0]


def fk_errors(model, names: list[str], positions: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position [m] and rotation [rad] errors of the (k, len(names)) joint states against the pose T."""
    import torch

    order = [list(names).index(j) for j in model.joint_names]
    q = torch.as_tensor(np.atleast_2d(positions)[:, order], dtype=torch.float64)
    T_sol = model.fk(q).numpy()[:, 0]
    dp = np.linalg.norm(T_sol[:, :3, 3] - T[None, :3, 3], axis=-1)
    cos = (np.einsum("kij,ij->k", T_sol[:, :3, :3], T[:3, :3]) - 1.0) / 2.0
    return dp, np.arccos(np.clip(cos, -1.0, 1.0))


def solutions_of(result) -> tuple[list[str], np.ndarray]:
    """(joint names, (k, len(names)) positions) of one IKTargetResult (one JointState per solution)."""
    assert len(result.solutions) == result.num_solutions
    names = list(result.solutions[0].name)
    assert all(list(s.name) == names for s in result.solutions)
    return names, np.array([list(s.position) for s in result.solutions])


def doc_service_call_answers(model) -> None:
    """docs/your_robot.md's ``ros2 service call ... compute_ik`` command, run as written: SUCCESS, and the
    returned joints reach the pose in the command."""
    import re
    import shlex

    from ikdiffuser_ros.kinematics.transforms import quat_to_matrix

    line = next(ln for ln in DOC.read_text().splitlines() if ln.startswith("ros2 service call"))
    argv = shlex.split(line)
    request = yaml.safe_load(argv[-1])["ik_request"]
    out = run(argv, REPO)
    response = out[out.index("response:"):]
    assert "MoveItErrorCodes(val=1" in response, out
    names = re.search(r"name=\[([^\]]*)\]", response).group(1)
    positions = re.search(r"position=(?:array\('d', )?\[([^\]]*)\]", response).group(1)
    names = [n.strip().strip("'") for n in names.split(",")]
    q = np.array([float(v) for v in positions.split(",")])
    pose = request["pose_stamped"]["pose"]
    T = np.eye(4)
    T[:3, 3] = [pose["position"][k] for k in "xyz"]
    T[:3, :3] = quat_to_matrix(np.array([pose["orientation"][k] for k in "xyzw"], dtype=float))
    dp, dr = fk_errors(model, names, q, T)
    assert dp.max() <= 2e-5 and dr.max() <= 2e-4, (dp, dr, out)


def test_from_a_urdf_to_answers_from_ros2_launch(client, tmp_path):  # noqa: F811 - the imported fixture
    from builtin_interfaces.msg import Duration
    from moveit_msgs.srv import GetPositionIK

    from ikdiffuser_ros.collision.fcl_checker import CollisionChecker
    from ikdiffuser_ros.msg import IKTarget
    from ikdiffuser_ros.robots import load_robot
    from ikdiffuser_ros.srv import GetIKSolutions

    t0 = time.monotonic()
    robot_dir, run_dir, model_dir = tmp_path / "robots", tmp_path / "runs" / "ur3", tmp_path / "models" / "ur3"
    out = run(["ikdiffuser", "init-robot", "--urdf", UR3, "--end-effectors", "tool0", "--out-dir", str(robot_dir),
               "--samples", "2000", "--no-progress"], tmp_path)
    robot_yaml = robot_dir / "ur3.yaml"
    assert f"robot:={robot_yaml}" in out, out
    with (robot_dir / "ur3.training.yaml").open("a") as f:
        f.write(TINY)
    out = run(["ikdiffuser", "train", "--robot", str(robot_yaml), "--out", str(run_dir), "--no-progress"], tmp_path)
    assert f"[train] config {robot_dir / 'ur3.training.yaml'}" in out and "model=IKMLPDenoiser" in out, out
    run(["ikdiffuser", "ship", str(run_dir), "--out", str(model_dir), "--num-targets", "50"], tmp_path)
    assert {"card.json", "model.safetensors", "eval.json", "README.md"} <= {p.name for p in model_dir.iterdir()}
    t_ready = time.monotonic()

    model = load_robot(robot_yaml)
    q_true, T = free_reachable_pose(model)
    with Launched(tmp_path / "launch.log", robot=str(robot_yaml), model_path=str(model_dir)) as launched:
        launched.wait_for("ready in")
        assert node_parameters(client, ["robot", "model_path"]) == {"robot": str(robot_yaml),
                                                                     "model_path": str(model_dir)}
        # MoveIt's compute_ik on the group init-robot wrote
        req = GetPositionIK.Request()
        req.ik_request.group_name = "arm"
        req.ik_request.ik_link_name = "tool0"
        req.ik_request.pose_stamped = pose_stamped(T, model.root_frame)
        req.ik_request.timeout = Duration(sec=20)
        res = call(client, GetPositionIK, "/ikdiffuser_node/compute_ik", req)
        assert res.error_code.val == 1, res
        js = res.solution.joint_state
        dp, dr = fk_errors(model, list(js.name), np.asarray(js.position), T)
        assert dp.max() <= 2e-5 and dr.max() <= 2e-4, (dp, dr)
        # get_ik_solutions, collision free: every solution reaches the pose and is free of self collision
        req = GetIKSolutions.Request(num_solutions=8, random_seed=0, avoid_collisions=True, timeout=Duration(sec=30))
        req.targets = [IKTarget(link_names=["tool0"], poses=[pose_stamped(T)])]
        res = call(client, GetIKSolutions, "/ikdiffuser_node/get_ik_solutions", req)
        assert res.error_code == GetIKSolutions.Request.SUCCESS, res.message
        result = res.results[0]
        assert result.num_solutions > 0
        names, q = solutions_of(result)
        dp, dr = fk_errors(model, names, q, T)
        assert dp.max() <= 2e-5 and dr.max() <= 2e-4, (dp, dr)
        order = [names.index(j) for j in model.joint_names]
        import torch

        assert np.asarray(CollisionChecker(model).check(torch.as_tensor(q[:, order])).free).all()
        out = launched.output()
        assert "refitting" not in out and "no sphere model" not in out, out
        if importlib.util.find_spec("ros2service") is not None:
            doc_service_call_answers(model)
        assert_clean_sigint(launched)
    print(f"init-robot + train + ship {t_ready - t0:.0f} s; launch + answers {time.monotonic() - t_ready:.0f} s")


def test_launch_with_a_robot_yaml_that_lists_several_srdfs(client, tmp_path):  # noqa: F811 - the imported fixture
    """The robot's own SRDF plus the written collision SRDF: the node reads them through its robot parameter."""
    from ik_helpers import train_tiny
    from test_launch_process import solve_and_check_by_fk

    from ikdiffuser_ros.init_robot import init_robot

    erd = "package://example-robot-data/robots/finger_edu_description"
    result = init_robot(f"{erd}/robots/finger_edu.urdf", [f"{erd}/srdf/finger_edu.srdf"], out_dir=tmp_path / "robots",
                        samples=300, progress=False, log=lambda _: None)
    model_dir = train_tiny(str(result.robot_yaml), tmp_path / "model")
    with Launched(tmp_path / "launch.log", robot=str(result.robot_yaml), model_path=str(model_dir)) as launched:
        launched.wait_for("ready in")
        assert "MoveIt groups: leg -> ['finger_tip_link']" in launched.output()
        assert solve_and_check_by_fk(client, str(result.robot_yaml)) > 0
        assert_clean_sigint(launched)


def test_a_robot_yaml_that_does_not_exist_is_refused_by_the_launch(tmp_path):
    with Launched(tmp_path / "launch.log", robot=str(tmp_path / "none.yaml")) as launched:
        assert launched.wait_exit() != 0, launched.output()
        out = launched.output()
        assert f"robot '{tmp_path / 'none.yaml'}': no such robot YAML" in out, out
        assert "process started" not in out, out
