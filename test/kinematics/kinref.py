"""Independent references for the kinematics tests (imported by the test modules and conftest).

- ``pk_float64()``: pytorch_kinematics patched to parse URDF origins and axes in float64 (it
  hard-codes float32 in ``urdf._convert_transform`` and in the ``Chain``/``Joint`` defaults), so
  that it is a 1e-9 reference. Every patch, and torch's default dtype, is restored on exit.
- ``random_q(model, count, seed)``: configurations uniform within the model's limits (float64).
- ``rotation_error`` / ``pose_error`` / ``planar_T``: small helpers written without the package.
- ``import_pykdl()``: Orocos KDL from Debian's python3-pykdl, or skip.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import warnings

import numpy as np
import pytest
import torch

from ikdiffuser_ros.robots import available_robots

ROBOTS = available_robots()
#: Robots whose SRDF gives a moving planar virtual joint ``base_joint`` (root frame ``odom``).
MOBILE_ROBOTS = ("dual_ur5_mobile", "mobile_baxter")


def strip_transmissions(xml: str) -> str:
    """pytorch_kinematics' URDF parser chokes on PR2's <transmission>s (no kinematic content)."""
    return re.sub(r"<transmission.*?</transmission>", "", xml, flags=re.S)


@contextlib.contextmanager
def pk_float64():
    """pytorch_kinematics building float64 chains (restores every patch and the default dtype)."""
    pk = pytest.importorskip("pytorch_kinematics")
    import pytorch_kinematics.frame as pkf
    import pytorch_kinematics.transforms as tf
    import pytorch_kinematics.urdf as pku

    def convert_transform(origin):
        if origin is None:
            return tf.Transform3d(dtype=torch.float64)
        rpy = torch.tensor(origin.rpy, dtype=torch.float64)
        return tf.Transform3d(rot=tf.quaternion_from_euler(rpy, "sxyz"),
                              pos=torch.tensor(origin.xyz, dtype=torch.float64), dtype=torch.float64)

    saved = (pku._convert_transform, pk.chain.Chain.__init__.__defaults__, pkf.Joint.__init__.__defaults__,
             torch.get_default_dtype())
    joint_defaults = tuple(torch.float64 if d is torch.float32 else d for d in saved[2])
    pku._convert_transform = convert_transform
    pk.chain.Chain.__init__.__defaults__ = (torch.float64, "cpu")
    pkf.Joint.__init__.__defaults__ = joint_defaults
    torch.set_default_dtype(torch.float64)
    try:
        yield pk
    finally:
        pku._convert_transform = saved[0]
        pk.chain.Chain.__init__.__defaults__ = saved[1]
        pkf.Joint.__init__.__defaults__ = saved[2]
        torch.set_default_dtype(saved[3])


@contextlib.contextmanager
def _quiet():
    """urdf_parser_py prints a line per unknown tag/attribute to stderr."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def pk_serial_chain(xml: str, end_link: str, root_link: str = ""):
    """A float64 pytorch_kinematics SerialChain (root of the URDF -> ``end_link``)."""
    with pk_float64() as pk, _quiet():
        chain = pk.build_serial_chain_from_urdf(strip_transmissions(xml).encode(), end_link, root_link)
        return chain.to(dtype=torch.float64)


def random_q(model, count: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """(count, n) configurations uniform in the model's limits."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = model.limits(torch.float64)
    return (lo + (hi - lo) * torch.rand(count, model.n_joints, generator=g, dtype=torch.float64)).to(dtype)


def rotation_error(R_a: torch.Tensor, R_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle [rad] between rotations (..., 3, 3), computed in float64."""
    rel = R_a.double().transpose(-1, -2) @ R_b.double()
    vee = torch.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                       rel[..., 1, 0] - rel[..., 0, 1]], -1)
    return torch.atan2(vee.norm(dim=-1), rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)


def pose_error(T_a: torch.Tensor, T_b: torch.Tensor) -> tuple[float, float]:
    """(max position error [m], max rotation error [rad]) over a batch of (..., 4, 4)."""
    pos = (T_a[..., :3, 3].double() - T_b[..., :3, 3].double()).norm(dim=-1).max().item()
    return pos, rotation_error(T_a[..., :3, :3], T_b[..., :3, :3]).max().item()


def planar_T(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 4, 4) translation (x, y, 0) then Rz(theta), built without the package."""
    x, y, theta = (np.asarray(v.detach().double()) for v in (x, y, theta))
    T = np.zeros((len(x), 4, 4))
    c, s = np.cos(theta), np.sin(theta)
    T[:, 0, 0], T[:, 0, 1], T[:, 1, 0], T[:, 1, 1] = c, -s, s, c
    T[:, 2, 2] = T[:, 3, 3] = 1.0
    T[:, 0, 3], T[:, 1, 3] = x, y
    return torch.from_numpy(T)


def import_pykdl():
    """PyKDL from Debian's python3-pykdl (system python 3.11), or skip."""
    if "/usr/lib/python3/dist-packages" not in sys.path:
        sys.path.append("/usr/lib/python3/dist-packages")
    return pytest.importorskip("PyKDL")

