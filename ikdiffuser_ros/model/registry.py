"""Where checkpoints are found: a robot's model by its kinematic fingerprint, from any directory.

Search path, in order: the folders of ``$IKDIFFUSER_MODEL_PATH`` (``os.pathsep``-separated; your
own trained models), then the user folder ``$XDG_DATA_HOME/ikdiffuser/models`` (default
``~/.local/share/ikdiffuser/models``: ``ikdiffuser ship RUN --out`` a folder in it and every
program finds the model), then ``models/`` of this package (the source tree or the installed
``share/ikdiffuser_ros``), then ``share/ikdiffuser_ros/models`` under every ``AMENT_PREFIX_PATH``
prefix. Every folder holding a ``card.json`` below those roots is a candidate; the first whose
card's fingerprint equals :meth:`RobotModel.fingerprint` is the robot's checkpoint, so a model
trained for other joint limits or end effectors is never picked by mistake.
"""

from __future__ import annotations

import os
from pathlib import Path

from ikdiffuser_ros.errors import CheckpointError
from ikdiffuser_ros.model.checkpoint import card_fingerprint, read_card
from ikdiffuser_ros.resources import PACKAGE_NAME, package_share

#: Environment variable with extra checkpoint roots, searched first.
MODEL_PATH_ENV = "IKDIFFUSER_MODEL_PATH"


def user_models_dir() -> Path:
    """The user's model folder, searched after ``$IKDIFFUSER_MODEL_PATH``: ``$XDG_DATA_HOME/ikdiffuser/models``
    (``~/.local/share/ikdiffuser/models`` when XDG_DATA_HOME is unset); it may not exist."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return Path(data).expanduser() / "ikdiffuser" / "models"


def checkpoint_roots() -> list[Path]:
    """The roots searched for checkpoints, in order (module docstring); only existing folders."""
    roots = [Path(p).expanduser() for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    roots.append(user_models_dir())
    try:
        roots.append(package_share() / "models")
    except FileNotFoundError:
        pass
    roots += [Path(p) / "share" / PACKAGE_NAME / "models"
              for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    seen, out = set(), []
    for root in roots:
        if root.is_dir() and root.resolve() not in seen:
            seen.add(root.resolve())
            out.append(root)
    return out


def candidate_checkpoints() -> list[Path]:
    """Checkpoint folders (holding card.json) under :func:`checkpoint_roots`, each once, in search order."""
    seen, out = set(), []
    for root in checkpoint_roots():
        for card in sorted(root.glob("**/card.json")):
            key = card.parent.resolve()
            if key not in seen:
                seen.add(key)
                out.append(card.parent)
    return out


def find_checkpoint(robot, model_path: str | Path | None = None) -> Path:
    """The checkpoint folder for ``robot`` (a RobotModel): ``model_path`` if given (a folder or its
    model.safetensors), else the first candidate whose card fingerprint matches the robot's.

    Raises:
        CheckpointError: ``model_path`` does not exist, or no candidate matches (the message lists
            every folder tried with its fingerprint, and says how to get one).
    """
    fp = robot.fingerprint()
    if model_path:
        path = Path(model_path)
        path = path.parent if path.is_file() else path
        if not path.exists():
            raise CheckpointError(f"model_path {str(model_path)!r} does not exist (robot {robot.name!r}, "
                                  f"fingerprint {fp})")
        return path
    tried = []
    for folder in candidate_checkpoints():
        try:
            have = card_fingerprint(read_card(folder))
        except CheckpointError as exc:
            tried.append(f"{folder} (unreadable card.json: {exc})")
            continue
        if have == fp:
            return folder
        tried.append(f"{folder} (fingerprint {have})")
    raise CheckpointError(
        f"no checkpoint for robot {robot.name!r} with fingerprint {fp}: tried "
        + ("; ".join(tried) if tried else "nothing (no models/*/card.json found)")
        + f". Pass model_path, add a folder to ${MODEL_PATH_ENV} or ship one into {user_models_dir()}, or train "
        "one (ikdiffuser train, then ikdiffuser ship; docs/your_robot.md)")


__all__ = ["MODEL_PATH_ENV", "candidate_checkpoints", "checkpoint_roots", "find_checkpoint", "user_models_dir"]
