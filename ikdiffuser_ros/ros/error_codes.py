"""The one table from core outcomes and errors to the services' error codes.

``GetIKSolutions`` codes are its constants (values of moveit_msgs/MoveItErrorCodes where one
exists); ``compute_ik`` / ``solve_ik`` (moveit_msgs/GetPositionIK) use MoveItErrorCodes only,
so their column folds the codes MoveIt lacks into the nearest MoveIt one.
"""

from __future__ import annotations

from enum import IntEnum

from ikdiffuser_ros.errors import (CollisionCheckingUnavailableError, IKDiffuserError, InvalidGoalError,
                                   InvalidRequestError, InvalidRobotStateError, UnknownFrameError,
                                   UnknownGroupError, UnknownLinkError)
from ikdiffuser_ros.query import Status


class ErrorCode(IntEnum):
    """Error codes of GetIKSolutions (values match moveit_msgs/MoveItErrorCodes where one exists)."""

    SUCCESS = 1
    FAILURE = 99999
    TIMED_OUT = -6
    INVALID_GROUP_NAME = -15
    INVALID_GOAL = -16  # MoveIt's INVALID_GOAL_CONSTRAINTS
    INVALID_ROBOT_STATE = -17
    INVALID_LINK_NAME = -18
    FRAME_TRANSFORM_FAILURE = -21
    COLLISION_CHECKING_UNAVAILABLE = -22
    NO_IK_SOLUTION = -31
    INVALID_REQUEST = -100


#: (core error type, GetIKSolutions code, compute_ik code); the first matching row wins.
ERROR_TABLE: tuple[tuple[type, ErrorCode, ErrorCode], ...] = (
    (UnknownFrameError, ErrorCode.FRAME_TRANSFORM_FAILURE, ErrorCode.FRAME_TRANSFORM_FAILURE),
    (UnknownLinkError, ErrorCode.INVALID_LINK_NAME, ErrorCode.INVALID_LINK_NAME),
    (UnknownGroupError, ErrorCode.INVALID_GROUP_NAME, ErrorCode.INVALID_GROUP_NAME),
    (InvalidRobotStateError, ErrorCode.INVALID_ROBOT_STATE, ErrorCode.INVALID_ROBOT_STATE),
    (InvalidGoalError, ErrorCode.INVALID_GOAL, ErrorCode.INVALID_GOAL),
    (CollisionCheckingUnavailableError, ErrorCode.COLLISION_CHECKING_UNAVAILABLE, ErrorCode.NO_IK_SOLUTION),
    (InvalidRequestError, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_GOAL),
    (IKDiffuserError, ErrorCode.FAILURE, ErrorCode.FAILURE),
)

#: Outcome of a target -> (GetIKSolutions code, compute_ik code).
STATUS_TABLE: dict[Status, tuple[ErrorCode, ErrorCode]] = {
    Status.SOLVED: (ErrorCode.SUCCESS, ErrorCode.SUCCESS),
    Status.NO_SOLUTION: (ErrorCode.NO_IK_SOLUTION, ErrorCode.NO_IK_SOLUTION),
    Status.TIMED_OUT: (ErrorCode.TIMED_OUT, ErrorCode.NO_IK_SOLUTION),
}


def error_code(exc: BaseException, moveit: bool = False) -> ErrorCode:
    """The code answering ``exc`` (FAILURE for anything that is not a core error: a bug)."""
    for cls, ours, theirs in ERROR_TABLE:
        if isinstance(exc, cls):
            return theirs if moveit else ours
    return ErrorCode.FAILURE


def status_code(status: Status, error: BaseException | None = None, moveit: bool = False) -> ErrorCode:
    """The code of one target's outcome (an INVALID target: the code of its error)."""
    if status is Status.INVALID:
        return error_code(error, moveit) if error is not None else ErrorCode.INVALID_GOAL
    ours, theirs = STATUS_TABLE[status]
    return theirs if moveit else ours
