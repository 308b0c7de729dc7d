"""ikdiffuser_ros: diffusion-model inverse kinematics for multi-arm robots.

The one entry point is :class:`IKPipeline`: ``IKPipeline.from_robot("baxter").answer(IKQuery(...))``
(what the ROS node, the MoveIt plugin and the bench run for every request). Its batch engine,
:class:`ikdiffuser_ros.solver.IKDiffuserSolver`, is internal: it trusts the pipeline's validation.
The core (this package minus ``ikdiffuser_ros.ros``) imports no ROS module.
"""

# The colcon install tree holds the rosidl-generated msg/ and srv/ next to a copy
# of this package; let a source checkout earlier on sys.path still find them.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from ikdiffuser_ros.errors import (CheckpointError, ConfigError, IKDiffuserError, InvalidRequestError,
                                   RobotDescriptionError)
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.pipeline import IKPipeline, PipelineConfig
from ikdiffuser_ros.query import IKAnswer, IKQuery, IKTarget, JointBounds, Status, TargetAnswer
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.solver import SolverConfig

__all__ = [
    "IKAnswer",
    "IKPipeline",
    "IKQuery",
    "IKTarget",
    "JointBounds",
    "PipelineConfig",
    "Status",
    "TargetAnswer",
    "CheckpointError",
    "ConfigError",
    "IKDiffuserError",
    "InvalidRequestError",
    "RobotDescriptionError",
    "RobotModel",
    "SolverConfig",
    "load_robot",
]
