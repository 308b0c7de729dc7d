"""Sphere files (config/spheres/<robot>.json) that are corrupt or unreadable are errors naming the file, never
a silent "no collision guidance"; a robot without collision geometry has no sphere model (None)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from ikdiffuser_ros.collision import spheres
from ikdiffuser_ros.collision.spheres import SphereModel, read_sphere_file, sphere_file
from ikdiffuser_ros.errors import RobotDescriptionError, SphereFileError
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.solver import IKDiffuserSolver

pytestmark = pytest.mark.usefixtures("one_torch_thread_session")

_TWO_LINKS = """<robot name="{name}">
  <link name="base"/>
  <link name="tip">{geometry}</link>
  <joint name="j1" type="revolute"><parent link="base"/><child link="tip"/><axis xyz="0 0 1"/>
    <limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
</robot>"""


def _two_link_robot(name: str, geometry: str = "") -> RobotModel:
    """A one-joint robot; ``geometry``: the tip link's URDF elements (none: no collision geometry)."""
    return RobotModel.from_urdf(_TWO_LINKS.format(name=name, geometry=geometry), None, ["tip"])


@pytest.fixture
def panda_data(panda) -> dict:
    """The contents of the shipped panda sphere file."""
    return json.loads(sphere_file("panda").read_text())


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "panda.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_valid_copy_loads_like_the_shipped_file(panda, panda_data, tmp_path):
    copy = SphereModel.from_robot(panda, _write(tmp_path, panda_data))
    assert copy.num_spheres == SphereModel.from_robot(panda).num_spheres > 0


@pytest.mark.parametrize("text", ['{"links": {', "[1, 2, 3]", "", "not json"])
def test_truncated_or_non_json_file_is_an_error_naming_it(panda, tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(SphereFileError, match=str(path)) as info:
        SphereModel.from_robot(panda, path)
    assert isinstance(info.value, RobotDescriptionError)


def test_bytes_that_are_not_text_are_an_error(panda, tmp_path):
    path = tmp_path / "panda.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SphereFileError, match="cannot be read"):
        read_sphere_file(path, panda)


def test_unreadable_file_is_an_error(panda, panda_data, tmp_path, monkeypatch):
    path = _write(tmp_path, panda_data)

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(SphereFileError, match=f"{path}: cannot be read: .*Permission denied"):
        read_sphere_file(path, panda)


def test_a_folder_in_its_place_is_an_error(panda, tmp_path):
    (tmp_path / "panda.json").mkdir()
    with pytest.raises(SphereFileError, match="not a regular file"):
        read_sphere_file(tmp_path / "panda.json", panda)


def _first_link(data: dict) -> str:
    return next(iter(data["links"]))


@pytest.mark.parametrize("corrupt, what", [
    (lambda d: d.pop("links"), "'links' is not an object"),
    (lambda d: d["links"].update({_first_link(d): [[0.0, 0.0, 0.1]]}), "is not a list of \\[x, y, z, r\\]"),
    (lambda d: d["links"].update({_first_link(d): [[0.0, 0.0, float("nan"), 0.1]]}), "finite values"),
    (lambda d: d["links"].update({_first_link(d): [[0.0, 0.0, 0.0, -0.1]]}), "r >= 0"),
    (lambda d: d["links"].update({_first_link(d): "spheres"}), "is not a list"),
    (lambda d: d["links"].update({"no_such_link": [[0.0, 0.0, 0.0, 0.1]]}), "'no_such_link' is not a link"),
    (lambda d: d.update(always_colliding=[["panda_link1"]]), "'always_colliding' is not a list"),
    (lambda d: d.update(always_colliding=[["panda_link1", "nowhere"]]), "'always_colliding' is not a list"),
])
def test_malformed_contents_are_an_error_naming_the_field(panda, panda_data, tmp_path, corrupt, what):
    corrupt(panda_data)
    path = _write(tmp_path, panda_data)
    with pytest.raises(SphereFileError, match=what) as info:
        SphereModel.from_robot(panda, path)
    assert str(path) in str(info.value)


def test_no_file_is_no_error(panda, tmp_path):
    assert read_sphere_file(tmp_path / "missing.json", panda) is None


def test_robot_without_collision_geometry_has_no_sphere_model(make_loaded):
    robot = _two_link_robot("no_geometry_bot")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: there simply is no geometry
        assert SphereModel.for_guidance(robot) is None
        assert IKDiffuserSolver(make_loaded(robot), robot).sphere_model is None


def test_unloadable_collision_mesh_warns_and_gives_no_sphere_model(tmp_path):
    missing = tmp_path / "missing.stl"
    robot = _two_link_robot("mesh_bot", f'<collision><geometry><mesh filename="{missing}"/></geometry></collision>')
    with pytest.warns(UserWarning, match=f"cannot load collision mesh {missing}"):
        assert SphereModel.for_guidance(robot) is None


def test_corrupt_file_reaches_the_solver_as_an_error(panda, make_loaded, tmp_path, monkeypatch):
    path = _write(tmp_path, '{"robot": "panda", "links": [')
    monkeypatch.setattr(spheres, "sphere_file", lambda name: path)
    solver = IKDiffuserSolver(make_loaded(panda), panda)
    for _ in range(2):  # every use says so, not only the first one
        with pytest.raises(SphereFileError, match=str(path)):
            solver.sphere_model
