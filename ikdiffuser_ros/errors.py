"""One error hierarchy for the whole core.

Every error the core raises on bad input derives from :class:`IKDiffuserError`;
the ones caused by malformed descriptions or requests also derive from
:class:`ValueError`, so callers that only know the standard library can catch
them. The ROS layer maps these to MoveIt / GetIKSolutions error codes.
"""

from __future__ import annotations


class IKDiffuserError(Exception):
    """Base class of every error raised by ikdiffuser_ros."""


class RobotDescriptionError(IKDiffuserError, ValueError):
    """A URDF, xacro, SRDF or robot config that cannot be turned into a model."""


class SphereFileError(RobotDescriptionError):
    """A collision-sphere file (``config/spheres/<robot>.json``) that cannot be read or is not one; the
    message names the file."""


class CheckpointError(IKDiffuserError, ValueError):
    """A checkpoint that is missing, corrupt, or made for another robot."""


class ConfigError(IKDiffuserError, ValueError):
    """A setting of a config dataclass is out of its range (the message names it and the range)."""


class InvalidRequestError(IKDiffuserError, ValueError):
    """An IK request with bad values (NaN poses, unknown links, absurd sizes...)."""


def _listing(names, limit: int = 100) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class InvalidGoalError(InvalidRequestError):
    """A target pose that cannot be a goal: NaN or infinite values, a quaternion far from unit norm,
    a link constrained twice, mismatched list lengths."""


class InvalidRobotStateError(InvalidRequestError):
    """A joint state (seed, robot state) with unknown joints, NaN values or mismatched lengths."""


class UnknownFrameError(InvalidRequestError):
    """A frame that is neither the root frame nor a link of the robot; ``known`` lists the valid ones."""

    def __init__(self, frame: str, known, what: str = "") -> None:
        self.frame, self.known = frame, list(known)
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}unknown frame {frame!r}; valid frames: {_listing(self.known)} "
                         f"(an empty frame_id means the root frame)")


class UnknownLinkError(InvalidRequestError):
    """A link that cannot carry an IK target (not a link of the robot, or not rigidly attached to an
    end effector of the model, or not a tip of the requested group); ``valid`` lists the ones that can."""

    def __init__(self, link: str, valid, reason: str, what: str = "") -> None:
        self.link, self.valid = link, list(valid)
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}link {link!r} {reason}; valid links: {_listing(self.valid)}")


class UnknownGroupError(InvalidRequestError):
    """A planning group the model does not know; ``known`` lists the groups it has."""

    def __init__(self, group: str, known) -> None:
        self.group, self.known = group, sorted(known)
        super().__init__(f"unknown group {group!r}; groups: {_listing(self.known)}")


class CollisionCheckingUnavailableError(IKDiffuserError):
    """Collision-free answers were asked for but exact collision checking (python-fcl) is unavailable."""
