# Source me (bash):  source scripts/ros_env.sh
# Environment for running the node and the tests against the wheel-based ROS 2
# built by scripts/setup.sh: the venv (which is itself a ROS prefix), the colcon
# install tree of ikdiffuser_ros, and the test-only moveit_msgs in test_ws/.
# Safe to source more than once. Does not set ROS_DOMAIN_ID (tests pick their own).

_ikd_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"

if [ -f "$_ikd_root/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$_ikd_root/.venv/bin/activate"
  # The ros-* wheels install share/, lib/, include/ into the venv root.
  case ":${AMENT_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;;
    *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}";; esac
  case ":${CMAKE_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;;
    *) export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}";; esac
else
  echo "ros_env.sh: $_ikd_root/.venv missing; run 'make setup' (or source a system ROS first)" >&2
fi

# colcon's setup scripts prepend install/<pkg>/lib to LD_LIBRARY_PATH,
# install/<pkg>/lib/python3.11/site-packages to PYTHONPATH and install/<pkg> to
# AMENT_PREFIX_PATH/CMAKE_PREFIX_PATH. Use local_setup.sh: setup.sh would also
# re-source the build-time underlay (the venv, which has no setup script).
for _ikd_prefix in "$_ikd_root/test_ws/install" "$_ikd_root/install"; do
  if [ -f "$_ikd_prefix/local_setup.sh" ]; then
    # shellcheck disable=SC1090,SC1091
    COLCON_CURRENT_PREFIX="$_ikd_prefix" . "$_ikd_prefix/local_setup.sh"
  fi
done
unset _ikd_prefix
# an empty entry (trailing ':' when it started unset) would mean "current directory"
[ -n "${LD_LIBRARY_PATH:-}" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH%:}"

export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Keep discovery on this host (ROS_LOCALHOST_ONLY is deprecated since Jazzy).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export IKDIFFUSER_ROOT="$_ikd_root"
unset _ikd_root
