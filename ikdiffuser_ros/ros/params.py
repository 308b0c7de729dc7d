"""Every parameter of ``ikdiffuser_node`` in one place: :class:`NodeConfig`.

Each field carries its description and its valid range (or choices) as
dataclass metadata; :func:`declare_parameters` declares them all on a node
with a ``ParameterDescriptor`` (description, range, read-only for the ones
used only at start-up) and :func:`validate` refuses a bad value with a reason,
both at start-up (overrides / YAML) and later (``ros2 param set``), through
the node's on-set callback.

Parameter files are ``config/<robot>.yaml`` and hold only what differs from these defaults::

    ikdiffuser_node:
      ros__parameters:
        robot: baxter
        robot_description_timeout: 2.0

``python -m ikdiffuser_ros.ros.params`` prints the table of docs/ros_node.md.

``groups`` entries are ``"<group>:<link>[,<link>...]"`` strings: planning
groups for the MoveIt bridge when the SRDF has no usable ones (they add to /
override the robot config's and the SRDF's groups).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from ikdiffuser_ros.collision.world import MAX_EXTENT
from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.pipeline import PipelineConfig
from ikdiffuser_ros.query import IKQuery
from ikdiffuser_ros.sampling import objectives as obj
from ikdiffuser_ros.solver import SolverConfig

if TYPE_CHECKING:  # rclpy types only for the hints: the core configs above need no ROS
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.node import Node
    from rclpy.parameter import Parameter

# metadata keys
_DESC, _RANGE, _CHOICES, _RO = "description", "range", "choices", "read_only"
#: metadata key of a parameter that sets a core setting: (where, field), where is one of :data:`CORE_DEFAULTS`
_CORE = "core"
#: where core settings have their one default: the pipeline's config, the LM's tolerances, the query
CORE_DEFAULTS: dict[str, Any] = {
    "pipeline": PipelineConfig(),
    "refine": SolverConfig().refine,
    "query": {f.name: f.default for f in fields(IKQuery) if f.default is not MISSING},
}
_CORE_NAMES = {"pipeline": "PipelineConfig", "refine": "RefineConfig", "query": "IKQuery"}
#: start-up parameters the node sets, once started, to what it resolved (``model_path``: the checkpoint
#: folder it loaded; :func:`set_resolved`). rclpy refuses to change a read-only parameter, so these
#: are declared writable and made read-only then.
RESOLVED_AT_START = ("model_path",)


def _p(default: Any, description: str, range_: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None,
       read_only: bool = False, factory: bool = False, core: tuple[str, str] | None = None) -> Any:
    md = {_DESC: description, _RANGE: range_, _CHOICES: choices, _RO: read_only, _CORE: core}
    if factory:
        return field(default_factory=lambda: list(default), metadata=md)
    return field(default=default, metadata=md)


def _core(where: str, name: str, description: str, range_: tuple[float, float] | None = None,
          choices: tuple[str, ...] | None = None, read_only: bool = False) -> Any:
    """A parameter for the core setting ``name`` of ``where`` (:data:`CORE_DEFAULTS`), with that setting's
    default: its one default lives in the core (a None default, "the checkpoint's", reads 0 here)."""
    defaults = CORE_DEFAULTS[where]
    default = defaults[name] if isinstance(defaults, dict) else getattr(defaults, name)
    return _p(0 if default is None else default, description, range_, choices, read_only, core=(where, name))


@dataclass
class NodeConfig:
    """Parameters of ikdiffuser_node (names, defaults, descriptions, ranges)."""

    # -- robot ------------------------------------------------------------------------------
    robot_description: str = _p(
        "", "URDF XML of the robot; empty = read the robot_description topic (transient local)", read_only=True)
    robot_description_semantic: str = _p(
        "", "SRDF XML; empty = read the robot_description_semantic topic (transient local)", read_only=True)
    robot_description_timeout: float = _p(
        10.0, "seconds to wait for the robot_description(_semantic) topics when the parameters are empty "
        "(as MoveIt's <name>_timeout)", (0.0, 3600.0), read_only=True)
    robot: str = _p(
        "", "name of a robot in config/robots (or a path to a robot YAML): end effectors, groups, joint "
        "limits and locked joints of the model; also the URDF/SRDF files used when neither parameters "
        "nor topics provide a description", read_only=True)
    end_effectors: list = _p(
        [], "end-effector links of the model, in the checkpoint's order (empty = the robot config's, "
        "else the SRDF end_effector parent links)", read_only=True, factory=True)
    groups: list = _p(
        [], "planning groups for compute_ik/solve_ik and get_ik_solutions' group_name as "
        "'<group>:<link>[,<link>...]' (for robots whose SRDF has no usable groups)", read_only=True, factory=True)
    # -- model ------------------------------------------------------------------------------
    model_path: str = _p(
        "", "checkpoint folder or model.safetensors file; empty = the first checkpoint whose card.json fingerprint "
        "matches the robot on the search path: $IKDIFFUSER_MODEL_PATH, the user folder (~/.local/share/ikdiffuser/"
        "models), the package's models/. Once the node has started: the checkpoint folder it loaded", read_only=True)
    device: str = _p("cpu", "torch device: cpu, cuda or cuda:<index>", read_only=True)
    sampler: str = _core("pipeline", "sampler", "reverse-diffusion sampler", choices=("ddim", "ddpm"))
    sampler_steps: int = _core(
        "pipeline", "steps", "reverse-diffusion steps per solve; 0 = the checkpoint card's plan (its sampling.refined_steps and "
        "refined_tail_steps with refine, else sampling.steps and tail_steps; a diverse query's the diverse plan, a "
        "harvest's the card's sampling.harvest_steps where it has them). The node logs the plan in use at "
        "start-up", (0, 1000))
    torch_threads: int = _p(1, "torch intra-op CPU threads (0 = torch's default); one suits a request path of "
                            "small ops and leaves the other cores to other processes", (0, 256), read_only=True)
    # -- requests ---------------------------------------------------------------------------
    default_num_solutions: int = _core("query", "num_solutions", "solutions per target when a request asks for 0",
                                       (1, 4096))
    max_num_solutions: int = _core("pipeline", "max_num_solutions", "largest num_solutions a request may ask for",
                                   (1, 4096))
    max_targets: int = _core("pipeline", "max_targets", "largest number of targets in one GetIKSolutions request",
                             (1, 100000))
    max_batch_size: int = _core(
        "pipeline", "max_batch_size", "most candidate solutions (targets x solutions) per solver call; larger requests are split",
        (1, 1_000_000))
    default_timeout: float = _core(
        "pipeline", "default_timeout", "wall-clock budget [s] of a GetIKSolutions request whose timeout is 0", (0.001, 3600.0))
    max_timeout: float = _p(
        10.0, "cap [s] on the time from a request's arrival to its answer (GetIKSolutions, compute_ik, solve_ik; "
        "the default timeouts too): a larger timeout is clamped to it, and a request still waiting for the solver "
        "then is answered TIMED_OUT, so no request holds the solver or its client longer", (0.001, 3600.0))
    max_rounds: int = _core(
        "query", "max_rounds", "most sampling rounds of one request (every service): a target is sampled again, "
        "with more candidates each round, while it has fewer valid solutions than asked for and time is left; a "
        "get_ik_solutions request's max_rounds may lower it (0 = this value)", (1, 100_000))
    max_queued_requests: int = _p(
        64, "requests admitted at once (solving or waiting for the solver); one more is answered at once with "
        "FAILURE 'busy: N requests queued'. Each admitted request holds an executor thread", (1, 1024),
        read_only=True)
    service_queue_depth: int = _p(
        1000, "QoS history depth of the IK services' request queues (the rmw drops requests beyond it)",
        (1, 100_000), read_only=True)
    refine: bool = _core("pipeline", "refine", "polish samples with damped least squares before returning them")
    position_tolerance: float = _core(
        "refine", "pos_tol", "refinement tolerance: a solution's position error must be at most this [m]", (1e-7, 1.0))
    rotation_tolerance: float = _core(
        "refine", "rot_tol", "refinement tolerance: a solution's rotation error must be at most this [rad]", (1e-7, math.pi))
    return_failed_solutions: bool = _core(
        "query", "keep_invalid", "also return solutions beyond the tolerances (flagged by their errors); default: drop them")
    collision_oversample: float = _core(
        "pipeline", "collision_oversample", "with avoid_collisions, sample this many times more candidates before filtering", (1.0, 16.0))
    # -- objectives -------------------------------------------------------------------------
    objective_weights: list = _p(
        [], "default objectives of every request (get_ik_solutions, compute_ik, solve_ik) as '<name>:<weight>' "
        "entries over the objective registry: " + ", ".join(n for n in obj.OBJECTIVES if n != "user")
        + " (or their aliases); a get_ik_solutions request's objective_names / objective_weights and seed_weight "
        "override them by name, and 'seed' applies only to requests with a seed. Empty = none: answers closest to "
        "the seed first (else smallest position error), much faster on a CPU than objective polishing",
        factory=True)
    weight_collision: float = _core(
        "pipeline", "weight_collision", "weight of sphere-model collision guidance when avoid_collisions is set",
        (0.0, 1000.0))
    collision_guidance: str = _core(
        "pipeline", "collision_guidance", "when to guide sampling away from collisions (sphere model) with "
        "avoid_collisions: 'off' (exact filtering only), 'fallback' (only in the retry rounds of targets left "
        "without a collision-free solution; guidance is slow on a CPU), 'always'", choices=("off", "fallback", "always"))
    # -- MoveIt bridge ----------------------------------------------------------------------
    moveit_default_timeout: float = _p(
        1.0, "compute_ik/solve_ik budget [s] when the request's timeout is 0 (MoveIt's kinematics_solver_timeout)",
        (0.001, 3600.0))
    moveit_num_candidates: int = _p(
        1, "valid candidates compute_ik collects before answering; the best (closest to the seed) is returned. "
        "1 = the first valid one (the seed's own solution when the LM from the seed solves)", (1, 4096))
    moveit_consistency_limit: float = _p(
        0.0, "compute_ik/solve_ik local mode: every joint of the answer within this distance of the seed state "
        "[rad or m] (TRAC-IK's and pick_ik's local solving); 0 = global mode", (0.0, 100.0))
    moveit_random_seed: int = _p(
        0, "random seed of compute_ik sampling (>= 0: same request -> same answer; -1: nondeterministic)",
        (-1, 2**31 - 1))
    # -- frames outside the robot (ros/tf_frames.py) ---------------------------------------
    fixed_frame_transforms: list = _p(
        [], "frames outside the robot for setups with no TF, as 'FRAME x y z qx qy qz qw' entries: the root frame's "
        "pose in FRAME [m; quaternion x y z w], as a static transform FRAME -> root on /tf_static would give it; "
        "used when tf2 has no transform for FRAME at the request (a running TF tree takes precedence)", factory=True)
    tf_timeout: float = _p(
        0.1, "longest wait [s] for a transform tf2 does not have yet (e.g. a dynamic transform at a fresh stamp), once "
        "per request; the wait also ends with the request's budget; 0 = no wait", (0.0, 10.0))
    # -- planning scene / visualization ----------------------------------------------------
    follow_planning_scene: bool = _p(
        True, "subscribe to monitored_planning_scene, planning_scene, collision_object and attached_collision_object "
        "and ask get_planning_scene at start", read_only=True)
    monitored_planning_scene_topic: str = _p("/monitored_planning_scene", "move_group's scene topic", read_only=True)
    get_planning_scene_service: str = _p("/get_planning_scene", "service asked once at start (if it exists)",
                                         read_only=True)
    max_scene_extent: float = _p(
        1.0e4, "scene objects larger than this [m] (a box extent, radius or height) or reaching farther from their "
        "frame (pose, vertices, sizes) are refused as absurd, with a warning naming them", (1.0, MAX_EXTENT),
        read_only=True)
    max_mesh_triangles: int = _p(
        100_000, "a scene mesh with more triangles is replaced by its oriented bounding box (conservative), with a "
        "warning", (1, 100_000_000), read_only=True)
    publish_markers: bool = _p(True, "publish the last answer's solutions as a MarkerArray on ~/solutions")
    max_marker_solutions: int = _p(8, "solutions per target drawn in ~/solutions", (0, 1000))

    # ------------------------------------------------------------------------------------
    def pipeline_config(self) -> PipelineConfig:
        """The core pipeline's settings: the parameters that set them (:func:`_core`), the rest the core's defaults."""
        return PipelineConfig(**self._core_values("pipeline"))

    def solver_config(self, base: SolverConfig) -> SolverConfig:
        """``base`` with these parameters' tolerances: the one success test of every answer."""
        return replace(base, refine=replace(base.refine, **self._core_values("refine")))

    def default_objectives(self, has_seed: bool) -> dict[str, float]:
        """``objective_weights`` as ``{canonical name: weight}``, without ``seed`` when the request has none."""
        weights = parse_objectives(self.objective_weights)
        return {k: w for k, w in weights.items() if has_seed or k != "seed"}

    def _core_values(self, where: str) -> dict[str, Any]:
        """``{core field: value}`` of the parameters that set ``where``'s settings (0 steps: None, the card's)."""
        out = {}
        for f in fields(self):
            core = f.metadata.get(_CORE)
            if core is not None and core[0] == where:
                value = getattr(self, f.name)
                out[core[1]] = None if core[1] == "steps" and value == 0 else value
        return out

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def meta(cls, name: str) -> dict:
        return {f.name: f.metadata for f in fields(cls)}[name]


def markdown_table() -> str:
    """The parameter table of docs/ros_node.md (name, default, range / choices, when, description)."""
    rows = ["| name | default | range / choices | when | description |", "| --- | --- | --- | --- | --- |"]
    for f in fields(NodeConfig):
        md = f.metadata
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        rng = (f"[{md[_RANGE][0]}, {md[_RANGE][1]}]" if md[_RANGE] is not None
               else ", ".join(md[_CHOICES]) if md[_CHOICES] is not None else "")
        core = md[_CORE]
        origin = "" if core is None else f" (default from `{_CORE_NAMES[core[0]]}.{core[1]}`)"
        rows.append(f"| `{f.name}` | {default!r} | {rng} | {'start-up' if md[_RO] else 'live'} | {md[_DESC]}{origin} |")
    return "\n".join(rows)


def validate(name: str, value: Any) -> str | None:
    """None when ``value`` is acceptable for parameter ``name``, else the reason."""
    if name not in NodeConfig.names():
        return None  # not ours (e.g. use_sim_time)
    md = NodeConfig.meta(name)
    spec = NodeConfig.__dataclass_fields__[name]
    expected = list if spec.default_factory is not MISSING else type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f"{name} must be a list of strings"
    elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return f"{name} must be a {expected.__name__}, got {type(value).__name__} {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be finite, got {value}"
    rng = md[_RANGE]
    if rng is not None and not (rng[0] <= value <= rng[1]):
        return f"{name}={value!r} is outside [{rng[0]}, {rng[1]}]"
    if md[_CHOICES] is not None and value not in md[_CHOICES]:
        return f"{name}={value!r} is not one of {list(md[_CHOICES])}"
    return _content_reason(name, value)


def _content_reason(name: str, value: Any) -> str | None:
    """What is wrong with the content of a string parameter (device, frames, objectives, groups), or None."""
    if name == "device" and not (value == "cpu" or value == "cuda" or
                                 (value.startswith("cuda:") and value[5:].isdigit())):
        return f"device={value!r}: expected cpu, cuda or cuda:<index>"
    if name == "fixed_frame_transforms":
        from ikdiffuser_ros.ros.tf_frames import parse_fixed_transforms

        try:
            parse_fixed_transforms(value, "")
        except ValueError as exc:
            return f"fixed_frame_transforms: {exc}"
    if name == "objective_weights":
        try:
            parse_objectives(value)
        except InvalidRequestError as exc:
            return str(exc)
    if name == "groups":
        for entry in value:
            group, sep, links = entry.partition(":")
            if not sep or not group.strip() or not [s for s in links.split(",") if s.strip()]:
                return f"groups entry {entry!r}: expected '<group>:<link>[,<link>...]'"
    return None


def validate_all(config: NodeConfig) -> str | None:
    """Cross-parameter checks; None or the reason."""
    for name in NodeConfig.names():
        reason = validate(name, getattr(config, name))
        if reason:
            return reason
    if config.default_num_solutions > config.max_num_solutions:
        return (f"default_num_solutions={config.default_num_solutions} exceeds "
                f"max_num_solutions={config.max_num_solutions}")
    return None


def parse_objectives(entries: list[str]) -> dict[str, float]:
    """``["joint_limits:0.1", "seed:1"]`` -> ``{"joint_limits": 0.1, "seed": 1.0}`` (canonical names of the
    registry); :class:`InvalidRequestError` names a malformed entry, an unknown objective or a bad weight."""
    out: dict[str, float] = {}
    for entry in entries:
        name, sep, weight = entry.partition(":")
        try:
            w = float(weight)
        except ValueError:
            w = math.nan
        if not sep or not math.isfinite(w) or w < 0:
            raise InvalidRequestError(f"objective_weights entry {entry!r}: expected '<name>:<weight>' with a finite "
                                      f"weight >= 0")
        canonical = obj.canonical_name(name.strip())
        if canonical == "user":
            raise InvalidRequestError("objective_weights: 'user' needs a cost_fn, which only Python callers can pass")
        out[canonical] = w
    return out


def parse_groups(entries: list[str]) -> dict[str, tuple[str, ...]]:
    """``["left_arm:left_gripper", ...]`` -> ``{"left_arm": ("left_gripper",)}``."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        group, _, links = entry.partition(":")
        out[group.strip()] = tuple(s.strip() for s in links.split(",") if s.strip())
    return out


def declare_parameters(node: Node) -> NodeConfig:
    """Declare every :class:`NodeConfig` field on ``node`` and return the values it got.

    Raises ``ValueError`` with the reason when a value (from overrides or a
    parameter file) is invalid. Installs an on-set callback that refuses bad
    later changes (and read-only ones) with a reason, and keeps
    ``node.ikd_config`` up to date with accepted changes.
    """
    config = NodeConfig()
    for f in fields(NodeConfig):
        default = getattr(config, f.name)
        value = _declare(node, f.name, default,
                         _descriptor(f.metadata, default, writable=f.name in RESOLVED_AT_START))
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        if isinstance(default, list):
            value = list(value)
        reason = validate(f.name, value)
        if reason:
            raise ValueError(reason)
        setattr(config, f.name, value)
    reason = validate_all(config)
    if reason:
        raise ValueError(reason)
    _install_callbacks(node, config)
    return config


def set_resolved(node: Node, name: str, value: Any) -> None:
    """Parameter ``name`` (one of :data:`RESOLVED_AT_START`) re-declared, read-only, with ``value``: what the
    node resolved at start-up (``ros2 param get`` reads it from then on)."""
    if name not in RESOLVED_AT_START:
        raise ValueError(f"{name} is not a parameter resolved at start-up ({RESOLVED_AT_START})")
    node.undeclare_parameter(name)
    node.declare_parameter(name, value, _descriptor(NodeConfig.meta(name), value), ignore_override=True)


def _descriptor(md: dict, default: Any, writable: bool = False) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of a field: description, read-only flag (off when ``writable``), choices,
    numeric range."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = ParameterDescriptor(description=md[_DESC], read_only=bool(md[_RO]) and not writable)
    if md[_CHOICES]:
        desc.additional_constraints = f"one of {list(md[_CHOICES])}"
    rng = md[_RANGE]
    if rng is not None and isinstance(default, bool) is False:
        if isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(rng[0]), to_value=float(rng[1]),
                                                            step=0.0)]
        elif isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]), step=1)]
    return desc


def _declare(node: Node, name: str, default: Any, desc: ParameterDescriptor) -> Any:
    """Declare one parameter; its value (an override's, else ``default``). ``ValueError`` names a bad override."""
    if isinstance(default, list):
        from rclpy.parameter import Parameter

        # an empty list default cannot carry its type: declare with the type instead
        try:
            param = node.declare_parameter(name, Parameter.Type.STRING_ARRAY, desc)
        except Exception as exc:  # noqa: BLE001 - e.g. a wrongly typed override
            raise ValueError(f"parameter {name}: {exc}") from None
        return param.value if param.value is not None else []
    try:
        param = node.declare_parameter(name, default, desc)
    except Exception as exc:  # InvalidParameterValueException / type mismatch
        raise ValueError(f"parameter {name}: {exc}") from None
    return param.value


def _install_callbacks(node: Node, config: NodeConfig) -> None:
    """Set ``node.ikd_config`` (changes counted in ``node.ikd_config_version``) and the callbacks that check (:func:`_on_set`) and apply (:func:`_post_set`)
    later changes; without post-set callbacks (Humble) the on-set callback applies accepted changes."""
    has_post_set = hasattr(node, "add_post_set_parameters_callback")
    node.ikd_config, node.ikd_config_version = config, 0
    node.add_on_set_parameters_callback(lambda params: _on_set(node, params, apply=not has_post_set))
    if has_post_set:
        node.add_post_set_parameters_callback(lambda params: _post_set(node, params))


def _on_set(node: Node, params: list[Parameter], apply: bool) -> SetParametersResult:
    """Refuse a bad value, or a bad combination with the current ones, with the reason (``apply``: apply it)."""
    from rcl_interfaces.msg import SetParametersResult

    for p in params:
        reason = validate(p.name, p.value)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
    trial = NodeConfig(**{n: getattr(node.ikd_config, n) for n in NodeConfig.names()})
    for p in params:
        if p.name in NodeConfig.names():
            setattr(trial, p.name, p.value)
    reason = validate_all(trial)
    if reason:
        return SetParametersResult(successful=False, reason=reason)
    if apply:  # Humble: no post-set callbacks
        _post_set(node, params)
    return SetParametersResult(successful=True)


def _post_set(node: Node, params: list[Parameter]) -> None:
    """Copy accepted changes into ``node.ikd_config`` (an int given for a float parameter becomes a float) and
    count them in ``node.ikd_config_version`` (what the node derives from the parameters is rebuilt on a change)."""
    for p in params:
        if p.name in NodeConfig.names():
            value = p.value
            if isinstance(getattr(node.ikd_config, p.name), float) and isinstance(value, int):
                value = float(value)
            setattr(node.ikd_config, p.name, value)
    node.ikd_config_version += 1


if __name__ == "__main__":
    print(markdown_table())
