"""Frames of the core (no ROS): pose values, frame resolution at a joint state, rigidly attached tips."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ikdiffuser_ros.errors import InvalidGoalError, UnknownFrameError
from ikdiffuser_ros.kinematics.frames import FrameResolver, pose_matrices, pose_matrix, rigid_offsets


@pytest.fixture(scope="module")
def baxter():
    from ikdiffuser_ros.robots import load_robot

    return load_robot("baxter")


def test_pose_values_and_matrices():
    T = pose_matrix([0.1, 0.2, 0.3, 0.0, 0.0, math.sin(0.3), math.cos(0.3)])
    assert np.allclose(T[:3, 3], [0.1, 0.2, 0.3]) and np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3))
    assert np.allclose(pose_matrix(T), T)
    assert np.allclose(pose_matrix([0, 0, 0, 0, 0, 0, 1.05])[:3, :3], np.eye(3))  # normalized
    for bad in ([0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 2.0], [math.nan, 0, 0, 0, 0, 0, 1], np.diag([1, 1, 2, 1.0])):
        with pytest.raises(InvalidGoalError):
            pose_matrix(bad)


def test_many_poses_at_once_are_validated_as_one_at_a_time():
    """pose_matrices: the matrices pose_matrix gives, and ok False exactly where pose_matrix raises (7 numbers:
    NaN, infinite, zero or far-from-unit quaternions, a norm within the tolerance; matrices: scaled, sheared,
    reflected, a wrong last row, NaN)."""
    rng = np.random.default_rng(4)
    quats = rng.standard_normal((40, 4))
    quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
    poses = np.concatenate([rng.standard_normal((40, 3)), quats], -1)
    poses[1, 6], poses[2, 3:] = math.nan, 0.0
    poses[3, 3:] *= 1.05
    poses[4, 3:] *= 1.2
    poses[5, 0] = math.inf
    mats = np.stack([pose_matrix(p) if k > 5 else np.eye(4) for k, p in enumerate(poses)])
    mats[0, :3, :3] *= 1.01
    mats[1, 0, 1] += 0.01
    mats[2, :3, 0] *= -1
    mats[3, 3, 0] = 1e-3
    mats[4, 2, 2] = math.nan
    for batch in (poses.reshape(8, 5, 7), mats.reshape(4, 10, 4, 4)):
        T, ok = pose_matrices(batch)
        assert T.shape == batch.shape[:2] + (4, 4) and ok.shape == batch.shape[:2] and 30 < ok.sum() < 40
        for pose, T_k, ok_k in zip(batch.reshape(40, *batch.shape[2:]), T.reshape(40, 4, 4), ok.reshape(40)):
            try:
                expected = pose_matrix(pose)
            except InvalidGoalError:
                assert not ok_k
                continue
            assert ok_k and np.allclose(T_k, expected, rtol=0, atol=1e-15)


def test_frames(baxter):
    frames = FrameResolver(baxter)
    pose = [0.1, 0.2, 0.3, 0, 0, 0, 1]
    T_root = frames.to_root(pose, "")
    assert np.allclose(frames.to_root(pose, baxter.root_frame), T_root)
    assert np.allclose(frames.to_root(pose, "/" + baxter.root_frame), T_root)
    T_torso = baxter.fk_links(baxter.default_positions(), ["torso"])[0].numpy()
    assert np.allclose(frames.to_root(pose, "torso"), T_torso @ T_root)  # a link: placed by FK
    q = baxter.default_positions().numpy() + 0.3
    T_hand = baxter.fk_links(baxter.default_positions() + 0.3, ["left_gripper"])[0].numpy()
    assert np.allclose(frames.to_root(pose, "left_gripper", q), T_hand @ T_root)  # ... at the given state
    with pytest.raises(UnknownFrameError) as info:
        frames.to_root(pose, "no_such_frame", what="target 0")
    assert info.value.frame == "no_such_frame" and "torso" in info.value.known
    assert "target 0" in str(info.value) and "'torso'" in str(info.value)


def test_rigid_offsets(baxter):
    tips = rigid_offsets(baxter)
    assert tips["left_gripper"][0] == "left_gripper" and np.allclose(tips["left_gripper"][1], np.eye(4))
    # left_hand_link is rigidly attached to left_gripper (fixed joints after left_w2)
    ee, T = tips["left_hand_link"]
    assert ee == "left_gripper" and T.shape == (4, 4)
    T_q = baxter.fk_links(baxter.default_positions() - 0.2, ["left_gripper", "left_hand_link"]).numpy()
    assert np.allclose(np.linalg.inv(T_q[0]) @ T_q[1], T)  # the offset does not depend on the state
    assert "left_lower_forearm" not in tips


def test_quat_to_matrix_numpy_and_torch_agree():
    """The one quaternion convention, on numpy arrays (single poses, no torch overhead) and on tensors."""
    import torch

    from ikdiffuser_ros.kinematics.transforms import quat_to_matrix

    q = np.random.default_rng(0).normal(size=(16, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    R = quat_to_matrix(q)
    assert isinstance(R, np.ndarray) and R.shape == (16, 3, 3)
    assert np.array_equal(R, quat_to_matrix(torch.from_numpy(q)).numpy())
    one = quat_to_matrix(q[3])  # one quaternion: computed in Python floats, the same numbers
    assert isinstance(one, np.ndarray) and one.dtype == np.float64 and np.allclose(one, R[3], rtol=0, atol=1e-15)


def test_only_rigid_transforms_are_poses():
    """A (4, 4) pose must hold a rotation (orthonormal, det +1, within ORTHONORMAL_TOLERANCE) and the last row
    0 0 0 1: a reflection, a scaled or sheared rotation, a bad last row are refused by name; a rotation off by
    less than the tolerance (float32 round trips) is accepted as it is."""
    from scipy.spatial.transform import Rotation

    from ikdiffuser_ros.kinematics.frames import ORTHONORMAL_TOLERANCE

    T = np.eye(4)
    T[:3, :3], T[:3, 3] = Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix(), [0.1, 0.2, 0.3]
    assert np.array_equal(pose_matrix(T), T)
    near = T.copy()
    near[:3, :3] += 0.2 * ORTHONORMAL_TOLERANCE * np.random.default_rng(0).standard_normal((3, 3))
    assert np.array_equal(pose_matrix(near), near)
    reflection, scaled, sheared, last_row = T.copy(), T.copy(), T.copy(), T.copy()
    reflection[:3, 0] *= -1
    scaled[:3, :3] *= 1.01
    sheared[0, 1] += 0.01
    last_row[3, 0] = 1e-3
    for bad in (reflection, scaled, sheared, last_row):
        with pytest.raises(InvalidGoalError, match="not a rigid transform"):
            pose_matrix(bad)
