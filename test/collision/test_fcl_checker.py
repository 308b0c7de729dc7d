"""Exact FCL checker: world boxes, ACM, attached objects, SRDF pairs, self collision.

Independent references: trimesh's own ``CollisionManager`` on meshes built here
from the URDF geometry (tessellated primitives, so FCL runs GJK on convex
polytopes instead of our primitive-primitive routines).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("fcl")

from ikdiffuser_ros.collision.fcl_checker import CollisionChecker, load_mesh  # noqa: E402
from ikdiffuser_ros.collision.world import (  # noqa: E402
    AllowedCollisionMatrix, AttachedObject, Shape, World, WorldObject, translation,
)
from ikdiffuser_ros.resources import resolve_uri  # noqa: E402
from ikdiffuser_ros.robots import load_robot  # noqa: E402

#: Baxter with the right forearm through the left shoulder (found by random search, see test).
BAXTER_ARMS_CROSSED = [0.784, -0.434, 0.276, 1.692, -1.96, -1.115, 2.449,
                       1.553, -0.059, 1.405, 1.351, 1.699, -1.232, 1.591]


@pytest.fixture(scope="module")
def panda():
    model = load_robot("panda")
    return model, CollisionChecker(model)


@pytest.fixture(scope="module")
def baxter():
    model = load_robot("baxter")
    return model, CollisionChecker(model)


def _panda_q():
    q = torch.zeros(1, 7, dtype=torch.float64)
    q[0, 3], q[0, 5] = -1.5, 1.5
    return q


def _hand_box(model, q, size=0.04, offset=(0.0, 0.05, 0.04), name="box"):
    """A box overlapping panda_hand's mesh (beside the finger gap) at this configuration."""
    T_hand = model.fk_links(q, ["panda_hand"])[0, 0].numpy()
    return WorldObject(name, [Shape.box([size] * 3, T_hand @ translation(*offset))])


def _pairs(report, m=0):
    return {frozenset(p) for p in report.pairs[m]}


# ---------------------------------------------------------------------------- world objects, ACM
def test_box_on_hand_collides_and_moved_away_is_free(panda):
    model, checker = panda
    q = _panda_q()
    assert not checker.check(q).in_collision[0]
    report = checker.check(q, World([_hand_box(model, q)]), max_pairs=10)
    assert report.in_collision[0] and report.world_collision[0] and not report.self_collision[0]
    assert _pairs(report) == {frozenset({"panda_hand", "box"})}
    far = WorldObject("box", [Shape.box([0.04] * 3, translation(2.0, 0.0, 0.5))])
    report = checker.check(q, World([far]))
    assert not report.in_collision[0] and report.pairs[0] == []


def test_acm_entry_and_defaults(panda):
    model, checker = panda
    q = _panda_q()
    box = _hand_box(model, q)
    acm = AllowedCollisionMatrix()
    acm.set_entry("panda_hand", "box", True)
    assert not checker.check(q, World([box], acm=acm)).in_collision[0]
    # a default entry on the object alone decides
    acm = AllowedCollisionMatrix(default_entries={"box": True})
    assert not checker.check(q, World([box], acm=acm)).in_collision[0]
    # both have defaults: ANDed
    acm = AllowedCollisionMatrix(default_entries={"box": True, "panda_hand": False})
    assert checker.check(q, World([box], acm=acm)).in_collision[0]
    # an explicit entry wins over the defaults
    acm.set_entry("box", "panda_hand", True)
    assert not checker.check(q, World([box], acm=acm)).in_collision[0]
    # an entry for another link does not help
    acm = AllowedCollisionMatrix()
    acm.set_entry("panda_link7", "box", True)
    assert checker.check(q, World([box], acm=acm)).in_collision[0]


def test_world_primitives_and_mesh(panda):
    model, checker = panda
    q = _panda_q()
    T = model.fk_links(q, ["panda_hand"])[0, 0].numpy() @ translation(0.0, 0.05, 0.04)
    box_mesh = trimesh.creation.box([0.04] * 3)
    for shape in (Shape.sphere(0.025, T), Shape.cylinder(0.04, 0.02, T), Shape.cone(0.06, 0.04, T),
                  Shape.mesh(box_mesh.vertices, box_mesh.faces, T)):
        report = checker.check(q, World([WorldObject("thing", [shape])]))
        assert report.world_collision[0], shape.kind
        moved = Shape(shape.kind, shape.dims, translation(2.0, 0.0, 0.0) @ T, shape.vertices, shape.triangles)
        assert not checker.check(q, World([WorldObject("thing", [moved])])).in_collision[0], shape.kind


def test_padding_reaches_a_near_box(panda):
    model, _ = panda
    q = _panda_q()
    T_hand = model.fk_links(q, ["panda_hand"])[0, 0].numpy()
    base = CollisionChecker(model)
    # walk a small box (colliding at y = 0.1) out along hand y until it is clear, then pad the robot
    start = World([WorldObject("box", [Shape.box([0.02] * 3, T_hand @ translation(0.0, 0.1, 0.04))])])
    assert base.check(q, start).in_collision[0]
    for y in np.arange(0.1, 0.3, 0.005):
        world = World([WorldObject("box", [Shape.box([0.02] * 3, T_hand @ translation(0.0, y, 0.04))])])
        if not base.check(q, world).in_collision[0]:
            break
    dist, closest = base.min_distance(q, world)
    assert 0.0 < dist[0] < 0.01 and closest[0] == ("panda_hand", "box")
    padded = CollisionChecker(model, padding=0.02)
    assert padded.check(q, world).world_collision[0]
    # padding is for the world only: the default configuration stays self-collision free
    assert not padded.check(torch.zeros(1, 7, dtype=torch.float64)).self_collision[0]
    assert CollisionChecker(model, padding={"panda_hand": 0.02}).check(q, world).world_collision[0]
    assert not CollisionChecker(model, padding={"panda_link1": 0.02}).check(q, world).world_collision[0]


# ---------------------------------------------------------------------------- attached objects
def test_attached_object_touch_links(panda):
    model, checker = panda
    q = _panda_q()
    # a 2 cm cube overlapping the hand mesh, in the hand frame
    small = WorldObject("tool", [Shape.box([0.04] * 3, translation(0.0, 0.05, 0.04))])
    report = checker.check(q, World(attached=[AttachedObject("panda_hand", small)]))
    assert not report.in_collision[0]
    # a rod through the hand back into link7 / link6: only the hand may be touched
    rod = WorldObject("rod", [Shape.box([0.03, 0.03, 0.25], translation(0.0, 0.0, -0.06))])
    report = checker.check(q, World(attached=[AttachedObject("panda_hand", rod)]), max_pairs=10)
    assert report.self_collision[0] and not report.world_collision[0]
    touched = {name for pair in report.pairs[0] for name in pair} - {"rod"}
    assert touched and "panda_hand" not in touched
    assert all("rod" in pair for pair in report.pairs[0])
    report = checker.check(q, World(attached=[AttachedObject("panda_hand", rod, frozenset(touched))]))
    assert not report.in_collision[0]
    # ACM can allow it too; an attached object hits the world like a link
    acm = AllowedCollisionMatrix(default_entries={"rod": True})
    assert not checker.check(q, World(attached=[AttachedObject("panda_hand", rod)], acm=acm)).in_collision[0]
    T_tool = model.fk_links(q, ["panda_hand"])[0, 0].numpy() @ translation(0.0, 0.0, 0.16)
    obstacle = WorldObject("obstacle", [Shape.sphere(0.03, T_tool)])
    world = World([obstacle], attached=[AttachedObject("panda_hand",
                                                       WorldObject("stick", [Shape.box([0.01, 0.01, 0.3])]))])
    report = checker.check(q, world, max_pairs=10)
    assert report.world_collision[0] and frozenset({"stick", "obstacle"}) in _pairs(report)


# ---------------------------------------------------------------------------- self collision, SRDF
def test_self_pairs_exclude_srdf_and_adjacent(baxter):
    model, checker = baxter
    pairs = {frozenset(p) for p in checker.self_pairs()}
    assert pairs and not pairs & model.srdf.disabled_collisions
    for joint in model.urdf.joints.values():
        assert frozenset((joint.parent, joint.child)) not in pairs
    assert frozenset({"left_wrist", "right_wrist"}) in pairs


def test_baxter_default_free_and_srdf_default_pair_not_reported(baxter):
    model, checker = baxter
    q0 = model.default_positions()[None]
    assert not checker.check(q0).in_collision[0]
    # 'Default' reason in the SRDF: these overlap at the zero configuration ...
    pair = frozenset({"left_lower_forearm", "left_upper_forearm_visual"})
    assert pair in model.srdf.disabled_collisions and pair not in checker.adjacent
    acm = AllowedCollisionMatrix()
    acm.set_entry(*pair, False)  # ... an explicit ACM entry wins over the SRDF and re-enables the pair
    report = checker.check(q0, World(acm=acm), max_pairs=10)
    assert report.self_collision[0] and _pairs(report) == {pair}


class _Reference:
    """trimesh CollisionManager holding every link's collision geometry (primitives tessellated)."""

    def __init__(self, model):
        self.model = model
        self.links = [n for n, link in model.urdf.links.items() if link.collisions]
        self.manager = trimesh.collision.CollisionManager()
        self.parts = []  # (object name, link index, T_link_shape)
        for index, name in enumerate(self.links):
            for k, g in enumerate(model.urdf.links[name].collisions):
                if g.kind == "box":
                    mesh = trimesh.creation.box(g.size)
                elif g.kind == "cylinder":
                    mesh = trimesh.creation.cylinder(g.radius, g.length, sections=96)
                elif g.kind == "sphere":
                    mesh = trimesh.creation.icosphere(4, g.radius)
                else:
                    vertices, faces = load_mesh(resolve_uri(g.filename))
                    mesh = trimesh.Trimesh(vertices * np.asarray(g.scale), faces, process=False)
                self.manager.add_object(f"{name}#{k}", mesh)
                self.parts.append((f"{name}#{k}", index, g.origin))

    def at(self, q):
        """The manager with every object posed for q (n,) or (1, n)."""
        q = torch.as_tensor(q, dtype=torch.float64).reshape(1, -1)
        T_links = self.model.fk_links(q, self.links)[0].numpy()
        for name, index, T_link_shape in self.parts:
            self.manager.set_transform(name, T_links[index] @ T_link_shape)
        return self.manager


@pytest.fixture(scope="module")
def baxter_reference(baxter):
    return _Reference(baxter[0])


def test_baxter_arms_crossed_self_collision_matches_trimesh(baxter, baxter_reference):
    model, checker = baxter
    q = torch.tensor([BAXTER_ARMS_CROSSED], dtype=torch.float64)
    report = checker.check(q, max_pairs=100)
    assert report.self_collision[0]
    ours = _pairs(report)
    assert any(any(n.startswith("left") for n in p) and any(n.startswith("right") for n in p) for p in ours)
    _, names = baxter_reference.at(q).in_collision_internal(return_names=True)
    checked = {frozenset(p) for p in checker.self_pairs()}
    reference = {frozenset(n.split("#")[0] for n in pair) for pair in names}
    assert ours == {p for p in reference if p in checked}
    # and the zero configuration: the reference only finds pairs the SRDF/adjacency allow
    _, names = baxter_reference.at(model.default_positions()).in_collision_internal(return_names=True)
    reference = {frozenset(n.split("#")[0] for n in pair) for pair in names}
    assert reference and not reference & checked


def test_batched_world_check_matches_trimesh_on_random_baxter(baxter, baxter_reference):
    model, checker = baxter
    box_pose = translation(0.75, 0.0, 0.1)
    world = World([WorldObject("box", [Shape.box([0.5, 0.6, 0.4], box_pose)])])
    g = torch.Generator().manual_seed(7)
    lower, upper = model.limits()
    q = lower + (upper - lower) * torch.rand(50, model.n_joints, generator=g, dtype=torch.float64)
    report = checker.check(q, world)
    reference = np.zeros(50, dtype=bool)
    box = trimesh.creation.box([0.5, 0.6, 0.4], transform=box_pose)
    for m in range(50):
        reference[m] = baxter_reference.at(q[m]).in_collision_single(box)
    assert 5 <= reference.sum() <= 45  # the test means something
    np.testing.assert_array_equal(report.world_collision, reference)
    # self collision on the same configurations, restricted to the checked pairs
    checked = {frozenset(p) for p in checker.self_pairs()}
    self_reference = np.zeros(50, dtype=bool)
    for m in range(50):
        _, names = baxter_reference.at(q[m]).in_collision_internal(return_names=True)
        self_reference[m] = any(frozenset(n.split("#")[0] for n in pair) in checked for pair in names)
    assert 5 <= self_reference.sum() <= 45
    np.testing.assert_array_equal(report.self_collision, self_reference)
    # batched == one at a time
    singles = [checker.check(q[m:m + 1], world) for m in range(0, 50, 7)]
    np.testing.assert_array_equal([s.in_collision[0] for s in singles], report.in_collision[::7])
    np.testing.assert_array_equal([s.self_collision[0] for s in singles], report.self_collision[::7])


def test_min_distance(panda):
    model, checker = panda
    q = _panda_q().repeat(2, 1)
    T_hand = model.fk_links(q[:1], ["panda_hand"])[0, 0].numpy()
    world = World([WorldObject("box", [Shape.box([0.04] * 3, T_hand @ translation(0.0, 0.05, 0.04))])])
    dist, closest = checker.min_distance(q, world)
    assert np.all(dist == 0.0) and closest[0] == ("panda_hand", "box")
    far = World([WorldObject("ball", [Shape.sphere(0.1, translation(1.5, 0.0, 0.3))])])
    dist, _ = checker.min_distance(q[:1], far)
    Ts = model.fk_links(q[:1], [n for n, l in model.urdf.links.items() if l.collisions])[0].numpy()
    assert 0.5 < dist[0] < np.linalg.norm(Ts[:, :3, 3] - [1.5, 0.0, 0.3], axis=1).min()
    dist, _ = checker.min_distance(q[:1], None)
    assert dist[0] == np.inf


def test_bad_input(panda):
    _, checker = panda
    from ikdiffuser_ros.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        checker.check(torch.zeros(3, 6))
    with pytest.raises(InvalidRequestError):
        checker.check(torch.zeros(1, 7), World(attached=[AttachedObject("no_such_link", WorldObject("x"))]))


def test_the_largest_shape_allowed_is_still_checked_right(panda):
    """A sphere and a box of MAX_EXTENT around the robot: the robot is inside them (FCL does not
    overflow at the largest size a Shape may have; beyond it, Shape refuses to be built)."""
    from ikdiffuser_ros.collision.world import MAX_EXTENT

    _, checker = panda
    q = _panda_q()
    for shape in (Shape.sphere(MAX_EXTENT), Shape.box((MAX_EXTENT,) * 3)):
        report = checker.check(q, World([WorldObject("everything", [shape])]))
        assert report.world_collision.all(), shape.kind


@pytest.mark.parametrize("name", ["panda", "baxter", "talos", "dual_ur5_mobile", "mobile_baxter", "ur5", "kinova"])
def test_compiled_link_poses_are_torch_fk_and_give_the_same_verdicts(name):
    """The checker poses its bodies with the compiled FK (one-row checks: 867 -> 289 us on baxter): the same link
    poses as the torch FK (``model.fk_links``) on every shipped robot, and the same collision verdicts as a checker
    forced onto the torch FK, one row per call and in a batch."""
    from ikdiffuser_ros import native

    if not native.available():
        pytest.skip(native.unavailable_reason)
    model = load_robot(name)
    checker, torch_fk = CollisionChecker(model), CollisionChecker(model)
    q = model.lower + (model.upper - model.lower) * torch.rand(64, model.n_joints, dtype=torch.float64,
                                                               generator=torch.Generator().manual_seed(2))
    links = list(checker.geometry_links)
    assert np.abs(checker._link_poses(q, links) - model.fk_links(q, links).numpy()).max() < 1e-12
    torch_fk._compiled_fk[tuple(links)] = None  # torch's FK for the same links
    expected = torch_fk.check(q).in_collision
    assert expected.any() or name in ("kinova", "ur5"), "some random configurations collide"
    assert np.array_equal(checker.check(q).in_collision, expected)
    assert [bool(checker.check(q[i:i + 1]).in_collision[0]) for i in range(8)] == expected[:8].tolist()
