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


class CheckpointError(IKDiffuserError, ValueError):
    """A checkpoint that is missing, corrupt, or made for another robot."""


class InvalidRequestError(IKDiffuserError, ValueError):
    """An IK request with bad values (NaN poses, unknown links, absurd sizes...)."""
