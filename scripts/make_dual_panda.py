"""Two example-robot-data pandas 1.2 m apart under one root, no joint shared: the robot of the learning-speed study
of docs/training.md ("two chains in one dense network"). Writes dual_panda.urdf, dual_panda.yaml (robot config)
and dual_panda.training.yaml (the panda's recipe) into ``--out``:

    python scripts/make_dual_panda.py --out runs/dual_panda_robot
    ikdiffuser train --robot runs/dual_panda_robot/dual_panda.yaml --max-steps 6000 --out runs/dual_panda
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

from ikdiffuser_ros.resources import resolve_uri

PANDA = "package://example-robot-data/robots/panda_description/urdf/panda.urdf"


def prefixed(element: ET.Element, prefix: str) -> ET.Element:
    """A copy of a URDF link or joint with ``prefix`` on its name and on the links and joints it names."""
    e = ET.fromstring(ET.tostring(element))
    e.set("name", prefix + e.get("name"))
    for tag, key in (("parent", "link"), ("child", "link"), ("mimic", "joint")):
        child = e.find(tag)
        if child is not None:
            child.set(key, prefix + child.get(key))
    return e


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    panda = ET.parse(resolve_uri(PANDA)).getroot()
    robot = ET.Element("robot", name="dual_panda")
    ET.SubElement(robot, "link", name="world")
    for prefix, y in (("l_", 0.6), ("r_", -0.6)):
        robot.extend(prefixed(e, prefix) for e in panda if e.tag in ("link", "joint"))
        mount = ET.SubElement(robot, "joint", name=prefix + "mount", type="fixed")
        ET.SubElement(mount, "parent", link="world")
        ET.SubElement(mount, "child", link=prefix + "panda_link0")
        ET.SubElement(mount, "origin", xyz=f"0 {y} 0", rpy="0 0 0")
    args.out.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(robot).write(args.out / "dual_panda.urdf")
    (args.out / "dual_panda.yaml").write_text(
        "name: dual_panda\nurdf: dual_panda.urdf\nend_effectors: [l_panda_hand_tcp, r_panda_hand_tcp]\n")
    recipe = Path(__file__).resolve().parents[1] / "config" / "training" / "panda.yaml"
    (args.out / "dual_panda.training.yaml").write_text(f"extends: {recipe}\nrobot: {args.out.resolve()}/dual_panda.yaml\n")
    print(args.out / "dual_panda.yaml")


if __name__ == "__main__":
    main()
