"""Scene-shape validation and the principal-axes bounding box (collision/world.py)."""
from __future__ import annotations

import numpy as np
import pytest

from ikdiffuser_ros.collision.world import Shape, mesh_obb, translation, validated_shape
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
    (Shape.mesh(TETRA[0] * 1e301, TETRA[1]), "beyond"),
    (Shape.box((0.1, 0.1, 0.1), translation(2e4, 0, 0)), "beyond"),
    (Shape.box((3e4, 0.1, 0.1)), "beyond"),
])
def test_invalid_shapes_are_refused_with_the_reason(shape, why):
    with pytest.raises(InvalidRequestError, match=why):
        validated_shape(shape)


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
