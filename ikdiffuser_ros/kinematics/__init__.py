"""Robot descriptions (URDF/xacro/SRDF) and batched kinematics in torch."""

from ikdiffuser_ros.kinematics.robot_model import RobotModel

__all__ = ["RobotModel"]
