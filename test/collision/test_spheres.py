"""Sphere collision model (collision/spheres.py) and the world containers (collision/world.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from solvertools import random_q

from ikdiffuser_ros.collision.spheres import (GENERATOR_VERSION, SphereModel, fit_spheres, geometry_mesh,
                                              self_collision_mask, shape_sdf, sphere_file)
from ikdiffuser_ros.collision.world import (AllowedCollisionMatrix, AttachedObject, Shape, World, WorldObject,
                                            translation)
from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.robots import available_robots, load_robot

# one torch thread (test/conftest.py), in place before the module-scoped sphere model
pytestmark = pytest.mark.usefixtures("one_torch_thread_session")


@pytest.fixture(scope="module")
def panda_spheres(panda):
    return SphereModel.from_robot(panda)


@pytest.mark.parametrize("name", available_robots())
def test_committed_sphere_files_match_their_robot(name):
    path = sphere_file(name)
    assert path.is_file(), f"missing {path}; run generate_sphere_file(load_robot({name!r}))"
    data = json.loads(path.read_text())
    model = load_robot(name)
    assert data["fingerprint"] == model.fingerprint()
    assert data["generator_version"] == GENERATOR_VERSION
    assert set(data["links"]) == {link for link, spec in model.urdf.links.items() if spec.collisions}
    assert all(1 <= len(s) <= data["fit"]["max_spheres"] for s in data["links"].values())


@pytest.mark.parametrize("name,links", [
    ("panda", ["panda_link0", "panda_link3", "panda_link6", "panda_hand", "panda_leftfinger"]),
    ("baxter", ["torso", "right_upper_shoulder", "r_gripper_l_finger", "left_wrist"]),
    ("pr2", ["r_shoulder_pan_link", "l_forearm_link"]),
])
def test_spheres_contain_the_link_geometry(name, links):
    """Fresh surface samples of every collision shape (URDF meshes via trimesh, primitives) lie in the
    union of the link's spheres (to 1 mm: the fit covers a dense sample plus 2 mm padding)."""
    import trimesh

    model = load_robot(name)
    sm = SphereModel.from_robot(model)
    for link in links:
        sel = [i for i, owner in enumerate(sm.sphere_link_names) if owner == link]
        centres, radii = sm.local[sel].numpy(), sm.radii[sel].numpy()
        for geom in model.urdf.links[link].collisions:
            mesh = geometry_mesh(geom)
            pts, _ = trimesh.sample.sample_surface(mesh, 3000, seed=123)
            pts = np.concatenate([pts, mesh.vertices])
            outside = (np.linalg.norm(pts[:, None] - centres[None], axis=-1) - radii[None]).min(1)
            assert outside.max() < 1e-3, (name, link, outside.max())


def test_sphere_geometry_is_kept_exactly():
    s = fit_spheres([Shape.sphere(0.3, translation(1, 2, 3))])
    np.testing.assert_allclose(s, [[1, 2, 3, 0.3]])


def test_box_fit_contains_the_box():
    box = Shape.box([0.4, 0.1, 0.05], translation(0.1, 0, 0))
    s = fit_spheres([box])
    corners = np.array([[0.1 + x * 0.2, y * 0.05, z * 0.025] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    d = (np.linalg.norm(corners[:, None] - s[None, :, :3], axis=-1) - s[None, :, 3]).min(1)
    assert d.max() <= 1e-9
    assert 1 < len(s) <= 10  # an elongated box needs several spheres


def test_sphere_centres_follow_fk(panda, panda_spheres):
    q = random_q(panda, 5, seed=1)
    c = panda_spheres.sphere_centers(q)
    assert c.shape == (5, panda_spheres.num_spheres, 3)
    T = panda.fk_links(q, panda_spheres.links)
    k = 7
    li = int(panda_spheres.sphere_link[k])
    expect = T[:, li, :3, :3] @ panda_spheres.local[k] + T[:, li, :3, 3]
    torch.testing.assert_close(c[:, k], expect)


def test_checked_pairs_skip_disabled_adjacent_and_same_link(panda, panda_spheres):
    names = panda_spheres.sphere_link_names
    pairs = {frozenset((names[int(i)], names[int(j)]))
             for i, j in zip(panda_spheres.pair_i, panda_spheres.pair_j)}
    assert all(len(p) == 2 for p in pairs)  # never a link with itself
    assert not pairs & panda.srdf.disabled_collisions
    assert frozenset(("panda_link3", "panda_link4")) not in pairs  # adjacent
    assert frozenset(("panda_link7", "panda_hand")) not in pairs  # adjacent through geometry-less link8
    assert frozenset(("panda_leftfinger", "panda_rightfinger")) not in pairs  # no active joint between them
    assert pairs, "panda has self-collision pairs to check"


def test_self_distance_gradient_matches_finite_differences(panda, panda_spheres):
    q = random_q(panda, 6, seed=2).requires_grad_(True)
    d = panda_spheres.self_distance(q)
    (g,) = torch.autograd.grad(d.sum(), q)
    eps = 1e-6
    for k in range(panda.n_joints):
        dq = torch.zeros_like(q)
        dq[:, k] = eps
        with torch.no_grad():
            fd = (panda_spheres.self_distance(q + dq) - panda_spheres.self_distance(q - dq)) / (2 * eps)
        torch.testing.assert_close(g[:, k], fd, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["panda", "baxter", "pr2", "dual_ur5_mobile"])
def test_spheres_flag_every_exact_collision(name):
    """Independent reference: python-fcl on the URDF meshes. The sphere model is conservative:
    whatever FCL finds in self collision, the spheres find too (the converse need not hold)."""
    pytest.importorskip("fcl")
    from ikdiffuser_ros.collision.fcl_checker import CollisionChecker

    model = load_robot(name)
    q = random_q(model, 150, seed=3)
    exact = CollisionChecker(model).check(q).self_collision
    approx = SphereModel.from_robot(model).in_self_collision(q).numpy()
    assert exact.any()
    assert not (exact & ~approx).any()
    assert approx.mean() < 4 * exact.mean() + 0.05  # and not absurdly conservative


def test_self_collision_mask_convenience(panda, panda_spheres):
    q = random_q(panda, 50, seed=4)
    assert torch.equal(self_collision_mask(panda, q), panda_spheres.in_self_collision(q))


def test_world_distance_to_a_sphere_is_analytic(panda, panda_spheres):
    q = random_q(panda, 4, seed=5)
    centre = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    world = World([WorldObject("ball", [Shape.sphere(0.1, translation(*centre.tolist()))])])
    d = panda_spheres.world_distance(q, world)
    c = panda_spheres.sphere_centers(q)
    expect = ((c - centre).norm(dim=-1) - panda_spheres.radii - 0.1).amin(-1)
    torch.testing.assert_close(d, expect)


def test_world_distance_box_and_cylinder_sdf():
    # points in the shape frames, one box (half extents 0.1, 0.2, 0.3) and one cylinder (r 0.1, half height 0.2)
    codes = torch.tensor([0, 2])
    half = torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.2, 0.0]], dtype=torch.float64)
    p = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.4, 0.6, 0.3 + 0.2]], dtype=torch.float64)
    d = shape_sdf(p[:, None, :].expand(3, 2, 3), codes, half)
    assert d[0, 0].item() == pytest.approx(0.4)  # box face
    assert d[0, 1].item() == pytest.approx(0.4)  # cylinder side
    assert d[1, 0].item() == pytest.approx(-0.1)  # inside the box: - distance to nearest face
    assert d[1, 1].item() == pytest.approx(-0.1)
    assert d[2, 0].item() == pytest.approx(math.sqrt(0.3**2 + 0.4**2 + 0.2**2))  # box corner region
    r = math.hypot(0.4, 0.6) - 0.1
    assert d[2, 1].item() == pytest.approx(math.hypot(r, 0.5 - 0.2))  # cylinder rim region


def test_world_distance_oriented_box_and_acm(panda, panda_spheres):
    q = torch.zeros_like(panda.lower).clamp(panda.lower, panda.upper)[None]  # upright, the hand on top
    c = panda_spheres.sphere_centers(q)[0]
    k = int(torch.argmax(c[:, 2]))  # the highest sphere
    R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)  # 90 deg about z
    pose = np.eye(4)
    pose[:3, :3] = R.numpy()
    pose[:3, 3] = (c[k] + torch.tensor([0.0, 0.0, 0.5])).numpy()
    world = World([WorldObject("lid", [Shape.box([1.0, 0.2, 0.1], pose)])])
    d = panda_spheres.world_distance(q, world)
    # the box bottom face is 0.45 above the top sphere centre
    assert d.item() == pytest.approx(0.45 - panda_spheres.radii[k].item(), abs=1e-9)
    # allowing every link to touch the lid removes it from the check
    world.acm.set_default("lid", True)
    assert math.isinf(panda_spheres.world_distance(q, world).item())


def test_attached_object_spheres_move_with_the_link(panda, panda_spheres):
    world = World([WorldObject("ball", [Shape.sphere(0.05, translation(0.0, 0.0, 5.0))])],
                  [AttachedObject("panda_hand", WorldObject("stick", [Shape.cylinder(0.3, 0.01)]),
                                  {"panda_leftfinger", "panda_rightfinger"})])
    q = random_q(panda, 3, seed=6)
    c, r, names = panda_spheres.world_sphere_set(q, world)
    assert c.shape[1] > panda_spheres.num_spheres and names[-1] == "stick"
    T_hand = panda.fk_links(q, ["panda_hand"])[:, 0]
    att = c[:, panda_spheres.num_spheres:]
    local = (T_hand[:, None, :3, :3].transpose(-1, -2) @ (att - T_hand[:, None, :3, 3]).unsqueeze(-1)).squeeze(-1)
    assert (local[..., 2].abs() <= 0.15 + 1e-6).all()  # on the stick axis segment, in the hand frame
    # self check with the attachment honours touch links and the attachment link itself
    d_self = panda_spheres.self_distance_with(q, world)
    assert d_self.shape == (3,)
    pairs = panda_spheres.self_pair_distances_with(q, world)
    n_att = c.shape[1] - panda_spheres.num_spheres
    n_free = sum(1 for link in names[:panda_spheres.num_spheres]
                 if link not in ("panda_hand", "panda_leftfinger", "panda_rightfinger"))
    assert pairs.shape == (3, panda_spheres.pair_i.numel() + n_att * n_free)
    # an ACM entry allowing a link pair removes its sphere pairs
    world.acm.set_entry("panda_link1", "panda_link5", True)
    n15 = sum(1 for i, j in zip(panda_spheres.pair_i.tolist(), panda_spheres.pair_j.tolist())
              if {names[i], names[j]} == {"panda_link1", "panda_link5"})
    assert n15 > 0
    assert panda_spheres.self_pair_distances_with(q, world).shape[1] == pairs.shape[1] - n15


def test_world_validation():
    with pytest.raises(InvalidRequestError, match="box needs 3 dims"):
        Shape("box", [1.0, 2.0])
    with pytest.raises(InvalidRequestError, match="unknown shape kind"):
        Shape("torus", [1.0])
    with pytest.raises(InvalidRequestError, match="duplicate"):
        World([WorldObject("a", []), WorldObject("a", [])])


def test_acm_moveit_semantics():
    acm = AllowedCollisionMatrix.from_message_fields(
        ["a", "b"], [[False, True], [True, False]], ["c", "d"], [True, False])
    assert acm.allowed("a", "b") and acm.allowed("b", "a")
    assert not acm.allowed("a", "a")  # explicit entry: checked
    assert acm.allowed("a", "c")  # only c has a default: its value
    assert not acm.allowed("a", "d")
    assert not acm.allowed("c", "d")  # both defaults: AND
    assert not acm.allowed("x", "y")  # nothing said: checked
    acm.set_entry("c", "d", True)
    assert acm.allowed("d", "c")  # an entry wins over the defaults
