"""ikdiffuser_ros: diffusion-model inverse kinematics for multi-arm robots.

The core (this package minus ``ikdiffuser_ros.ros``) imports no ROS module:
tensors in, tensors out.
"""

from ikdiffuser_ros.errors import CheckpointError, IKDiffuserError, InvalidRequestError, RobotDescriptionError
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.robots import load_robot

__all__ = [
    "CheckpointError",
    "IKDiffuserError",
    "InvalidRequestError",
    "RobotDescriptionError",
    "RobotModel",
    "load_robot",
]
