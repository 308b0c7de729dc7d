"""The peers of ``ikdiffuser bench``, by name: :data:`PEERS` and :func:`build_peers`.

Each peer's library is imported only when it is built (:mod:`ikdiffuser_ros.bench.peers`,
:mod:`ikdiffuser_ros.bench.pink_peer`); a peer that is not installed, or cannot model a robot, is
skipped with a note.
"""

from __future__ import annotations

from ikdiffuser_ros.bench.peers import KDLPeer, Peer, RTBPeer, TracIKPeer
from ikdiffuser_ros.bench.pink_peer import PinkPeer
from ikdiffuser_ros.kinematics.robot_model import RobotModel

def _pink(model: RobotModel, urdf_xml: str, budget: float):
    return PinkPeer(model, urdf_xml)


#: peer name -> constructor (model, urdf_xml, per-target budget [s]).
PEERS = {
    "trac_ik": lambda model, xml, budget: TracIKPeer(model, xml, timeout=budget),
    "rtb_ik_LM": lambda model, xml, budget: RTBPeer(model, xml),
    "pink": _pink,
    "kdl": lambda model, xml, budget: KDLPeer(model, xml),
}


def build_peers(names: list[str], model: RobotModel, urdf_xml: str, budget: float) -> tuple[list[Peer], list[str]]:
    """The peers in ``names`` that build; notes say why the others were skipped."""
    peers, notes = [], []
    for name in names:
        try:
            peers.append(PEERS[name](model, urdf_xml, budget))
        except ImportError as exc:
            notes.append(f"{name}: skipped, not installed ({exc})")
        except (ValueError, RuntimeError) as exc:  # a robot the peer cannot model (floating base, mimic chain)
            notes.append(f"{name}: skipped on {model.name} ({exc})")
    return peers, notes
