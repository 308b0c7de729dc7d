"""Scene-shape validation and the principal-axes bounding box (collision/world.py)."""
from __future__ import annotations

import numpy as np
import pytest

from ikdiffuser_ros.collision.world import MAX_EXTENT, Shape, mesh_obb, translation, validated_shape
from ikdiffuser_ros.errors import InvalidRequestError

TETRA = (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]) * 0.1,
         np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]))


@pytest.mark.parametrize("shape,why", [
    (Shape.sphere(0.0), "zero-size sphere"),
    (Shape.cylinder(0.0, 0.1), "zero-size cylinder"),
    (Shape.cone(0.2, 0.0), "zero-size cone"),
    (Shape.box((0.5, 0.0, 0.0)), "zero-size box"),
    (Shape.mesh(np.zeros((0, 3)), np.zeros((0, 3))), "empty mesh"),
    (Shape.mesh(TETRA[0], np.zeros((0, 3))), "empty mesh"),
    (Shape.mesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0.0]]), np.array([[0, 1, 2], [0, 0, 1]])), "degenerate"),
    (Shape.mesh(TETRA[0] * 2e5, TETRA[1]), "beyond"),
    (Shape.box((0.1, 0.1, 0.1), translation(2e4, 0, 0)), "beyond"),
    (Shape.box((3e4, 0.1, 0.1)), "beyond"),
])
def test_invalid_shapes_are_refused_with_the_reason(shape, why):
    with pytest.raises(InvalidRequestError, match=why):
        validated_shape(shape)


@pytest.mark.parametrize("shape,words", [
    (Shape.box((2e4, 0.1, 0.1)), ("absurd size", "box x 20000, y 0.1, z 0.1 m", "10000 m")),
    (Shape.sphere(5e4), ("absurd size", "sphere radius 50000 m",)),
    (Shape.cylinder(0.1, 1e9), ("absurd size", "cylinder height 0.1, radius 1e+09 m")),
    (Shape.cone(3e6, 0.1), ("absurd size", "cone height 3e+06, radius 0.1 m")),
])
def test_absurd_sizes_are_refused_naming_the_dimension(shape, words):
    """Each dimension (box extent, radius, height) at most max_extent, whatever the position: a huge
    object centred on the robot is refused, not checked."""
    with pytest.raises(InvalidRequestError) as info:
        validated_shape(shape)
    assert all(w in str(info.value) for w in words), str(info.value)
    assert validated_shape(Shape.sphere(5e3)).dims[0] == 5e3  # large but within the limit: kept


@pytest.mark.parametrize("make", [
    lambda: Shape.box((1e300, 1e300, 1e300)),
    lambda: Shape.sphere(1e308),
    lambda: Shape.cylinder(1e300, 0.1),
    lambda: Shape.cone(0.1, 2 * MAX_EXTENT),
    lambda: Shape.mesh(np.array([[0, 0, 0], [1e301, 0, 0], [0, 1, 0.0]]), np.array([[0, 1, 2]])),
    lambda: Shape.box((0.1, 0.1, 0.1), translation(1e300, 0, 0)),
])
def test_shapes_beyond_what_the_checkers_handle_cannot_be_built(make):
    """The core refuses sizes and coordinates beyond MAX_EXTENT in any World, not only the node's scene."""
    with pytest.raises(InvalidRequestError, match="absurd"):
        make()


def test_meaningful_degenerate_shapes_are_kept():
    plane = Shape.box((0.5, 0.5, 0.0))
    assert validated_shape(plane) is plane
    flat = Shape.mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.0]]), np.array([[0, 1, 2], [1, 3, 2]]))
    assert validated_shape(flat) is flat
    v, t = TETRA
    mixed = Shape.mesh(v, np.vstack([t, [[0, 0, 1], [1, 2, 1]]]))
    kept = validated_shape(mixed)
    assert kept.kind == "mesh" and np.array_equal(kept.triangles, t)


@pytest.mark.parametrize("points", [
    np.random.default_rng(0).normal(size=(200, 3)) * (0.3, 0.1, 0.02),
    np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.0]]),  # flat
    np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2.0]]),  # collinear
    np.array([[0.5, 0.5, 0.5]]),  # one point
])
def test_mesh_obb_contains_the_points_and_is_tight_on_flat_sets(points):
    extents, pose = mesh_obb(points)
    assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3)) and np.linalg.det(pose[:3, :3]) > 0
    local = (points - pose[:3, 3]) @ pose[:3, :3]
    assert np.all(np.abs(local) <= extents / 2 + 1e-12)
    if np.linalg.matrix_rank(points - points.mean(0)) < 3:
        assert np.sort(extents)[0] < 1e-12


def test_duplicate_object_ids_are_refused_naming_them():
    """World and attached objects share one id space; every id used twice is named (checked in one pass:
    a scene snapshot of thousands of objects is built inside the first request after a change)."""
    from ikdiffuser_ros.collision.world import AttachedObject, World, WorldObject

    box = [Shape.box((0.1, 0.1, 0.1))]
    objects = [WorldObject(f"box_{i}", box) for i in range(5000)] + [WorldObject("box_7", box)]
    with pytest.raises(InvalidRequestError, match=r"\['box_7', 'cup'\]"):
        World(objects + [WorldObject("cup", box)], [AttachedObject("left_gripper", WorldObject("cup", box))])
    assert len(World(objects[:-1]).object_ids()) == 5000
