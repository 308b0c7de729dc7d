#!/usr/bin/env bash
# Prepare a development/test environment with no ROS install:
#   .venv/          Python venv holding the core deps and ROS 2 Kilted from ros-* wheels
#   ikdiffuser_ros/_native*.so  the compiled path (native/, C++ with Eigen through pybind11)
#   build/ install/ colcon build of the root ament_cmake package ikdiffuser_ros
#   test_ws/        colcon build of test/interfaces (moveit_msgs & deps), only when
#                   the real moveit_msgs is not installed; of ../shared/ros_src/geometry2
#                   (tf2, tf2_msgs, tf2_py, tf2_ros_py: frames outside the robot), only when
#                   tf2_ros is not installed; and of ../shared/ros_src/composition_interfaces
#                   (for launch_ros) when the launch wheels are there
# Idempotent: each step is skipped when its inputs are unchanged, so a second run
# takes a second or two. Environment knobs:
#   PYTHON=python3.11     interpreter used to create .venv (default: python3 on PATH)
#   IKD_SKIP_COLCON=1     only set up the venv
#   IKD_FORCE=1           redo every step
#   IKD_LAUNCH_WHEELS=DIR launch/launch_ros/ros2cli wheels (default ../shared/wheels/launch)
#   IKD_ROS2CLI_WHEELS=DIR ros2 service/param/topic/interface/node wheels (default ../shared/wheels/ros2cli)
#   IKD_ROS_SRC=DIR       ROS package sources with no wheel: composition_interfaces for launch_ros,
#                         geometry2/ for tf2 (default ../shared/ros_src)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMPS="$VENV/.ikdiffuser-stamps"
LAUNCH_WHEELS="$(realpath -m "${IKD_LAUNCH_WHEELS:-$ROOT/../shared/wheels/launch}")"
ROS2CLI_WHEELS="$(realpath -m "${IKD_ROS2CLI_WHEELS:-$ROOT/../shared/wheels/ros2cli}")"
ROS_SRC="$(realpath -m "${IKD_ROS_SRC:-$ROOT/../shared/ros_src}")"

log() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }

# hash of the given files' contents (missing files hash as empty)
hash_files() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
stamp_ok() { [ "${IKD_FORCE:-0}" != 1 ] && [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_write() { mkdir -p "$STAMPS"; printf '%s\n' "$2" >"$STAMPS/$1"; }
# pip, quiet, minus the harmless "Location ... is ignored" lines of local indexes
pipq() {
  local out rc=0
  out="$("$VPY" -m pip --disable-pip-version-check -q "$@" 2>&1)" || rc=$?
  printf '%s\n' "$out" | grep -v -e ' is ignored' -e '^$' >&2 || true
  return $rc
}

# pip check, less the one requirement the --no-deps launch wheels (step 2b) leave open on purpose
pip_check() {
  local out
  out="$("$VPY" -m pip check 2>&1)" && return 0
  out="$(printf '%s\n' "$out" | grep -v 'requires ament-index-python, which is not installed' || true)"
  [ -z "$out" ] || { printf '%s\n' "$out" >&2; exit 1; }
}

# ---------------------------------------------------------------- 1. venv
if [ ! -x "$VENV/bin/python" ]; then
  PY="${PYTHON:-python3}"
  log "creating .venv with $(command -v "$PY") ($("$PY" --version 2>&1))"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  warn "the ROS 2 Kilted wheels are cp311 builds; .venv has $("$VPY" --version 2>&1)"
}

# ---------------------------------------------------------------- 2. requirements
req_hash="$(hash_files requirements/*.txt pyproject.toml)"
if stamp_ok requirements "$req_hash"; then
  log "requirements up to date"
else
  log "installing requirements (requirements/core.txt, requirements/ros.txt)"
  pipq install -r requirements/core.txt -r requirements/ros.txt
  pip_check
  log "pip install -e . --no-deps"
  pipq install --no-deps --no-build-isolation -e .
  "$VPY" -c 'import rclpy, torch, ikdiffuser_ros' || { warn "venv imports failed"; exit 1; }
  stamp_write requirements "$req_hash"
fi

# ---------------------------------------------------------------- 2b. launch (optional)
# launch, launch_ros and the ros2 command line are not on the registries; pure-Python wheels
# of them may be in $LAUNCH_WHEELS (../shared/notes/launch.md). --no-deps: launch_ros declares
# ament_index_python, which the ros-* wheels ship as ros-ament-index-python.
if [ -d "$LAUNCH_WHEELS" ]; then
  launch_hash="$(hash_files "$LAUNCH_WHEELS"/*.whl) osrf-pycommon==2.0.2"
  if stamp_ok launch-wheels "$launch_hash"; then
    log "launch wheels up to date"
  else
    log "installing launch, launch_ros, ros2cli from $LAUNCH_WHEELS"
    pipq install --no-deps "$LAUNCH_WHEELS"/*.whl osrf-pycommon==2.0.2
    stamp_write launch-wheels "$launch_hash"
  fi
else
  log "no $LAUNCH_WHEELS: ros2 launch not installed (the launch tests will be skipped)"
fi

# ---------------------------------------------------------------- 2c. ros2 service/param/topic/interface/node (optional)
# The rest of the ros2 command line, pure-Python wheels in $ROS2CLI_WHEELS (../shared/notes/launch.md), on top
# of step 2b's ros2cli. psutil is pinned here, with the wheels, not in requirements/ros.txt: only the ros2
# command imports it (ros2cli's daemon), never the node, and a system ROS 2 install brings its own.
if [ -d "$ROS2CLI_WHEELS" ] && [ -d "$LAUNCH_WHEELS" ]; then
  ros2cli_hash="$(hash_files "$ROS2CLI_WHEELS"/*.whl) psutil==7.2.2"
  if stamp_ok ros2cli-wheels "$ros2cli_hash"; then
    log "ros2cli wheels up to date"
  else
    log "installing ros2 service/param/topic/interface/node from $ROS2CLI_WHEELS"
    pipq install --no-deps "$ROS2CLI_WHEELS"/*.whl psutil==7.2.2
    stamp_write ros2cli-wheels "$ros2cli_hash"
  fi
elif [ -d "$ROS2CLI_WHEELS" ]; then
  warn "$ROS2CLI_WHEELS needs the ros2cli of $LAUNCH_WHEELS, which is missing: ros2 service/param not installed"
else
  log "no $ROS2CLI_WHEELS: ros2 service/param/topic/interface/node not installed (their tests will be skipped)"
fi

# ---------------------------------------------------------------- 3. CMake path fix
# The message wheels' exported CMake targets point at the wheel build machine's
# Python (/opt/python/cp311-cp311/...). Point them at this interpreter.
"$VPY" - "$VENV" <<'PYEOF'
import pathlib, sys, sysconfig
venv = pathlib.Path(sys.argv[1])
inc = sysconfig.get_paths()["include"]
site = sysconfig.get_paths()["purelib"]
old_inc = "/opt/python/cp311-cp311/include/python3.11"
old_site = "/opt/python/cp311-cp311/lib/python3.11/site-packages"
n = 0
for p in (venv / "share").rglob("*.cmake"):
    try:
        t = p.read_text()
    except (UnicodeDecodeError, OSError):
        continue
    if old_inc in t or old_site in t:
        p.write_text(t.replace(old_inc, inc).replace(old_site, site))
        n += 1
if n:
    print(f"[setup] rewrote build-machine Python paths in {n} CMake files")
PYEOF

# ---------------------------------------------------------------- 4. PyKDL (optional)
# Debian's python3-pykdl (Orocos KDL) is a reference IK solver for tests and
# benchmarks; tests that need it are skipped without it.
if ls /usr/lib/python3/dist-packages/PyKDL*.so >/dev/null 2>&1; then
  :
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  log "installing python3-pykdl with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q python3-pykdl >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q python3-pykdl >/dev/null 2>&1 \
      || warn "could not install python3-pykdl; KDL comparison tests will be skipped"
  fi
else
  warn "python3-pykdl not installed and apt-get unavailable (or not root); KDL tests will be skipped"
fi

# ---------------------------------------------------------------- 4b. compiled path (native/)
# FK, Jacobians, LM and the MLP sampler in C++ (ikdiffuser_ros/native.py): Eigen 3 from Debian,
# pybind11 from requirements/core.txt, built into the source package for the editable install.
native_hash="$(hash_files native/* requirements/core.txt) $("$VPY" --version 2>&1) $(uname -m)"
if stamp_ok native "$native_hash" && ls ikdiffuser_ros/_native*.so >/dev/null 2>&1; then
  log "compiled path up to date"
else
  if [ ! -f /usr/include/eigen3/Eigen/Dense ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing libeigen3-dev with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q libeigen3-dev >/dev/null 2>&1 || {
      apt-get update -q >/dev/null 2>&1 || true
      apt-get install -y -q libeigen3-dev >/dev/null 2>&1 || true; }
  fi
  log "building the compiled path: native/ -> ikdiffuser_ros/_native"
  rm -f ikdiffuser_ros/_native*.so
  mkdir -p build
  if ! { cmake -S native -B build/native -DPython3_EXECUTABLE="$VPY" -DCMAKE_BUILD_TYPE=Release \
           -DIKD_NATIVE_OUTPUT_DIR="$ROOT/ikdiffuser_ros" >build/native.log 2>&1 \
         && cmake --build build/native -j2 >>build/native.log 2>&1 \
         && "$VPY" -c 'from ikdiffuser_ros import native; assert native.available(), native.unavailable_reason'; }; then
    tail -20 build/native.log >&2
    warn "the compiled path did not build (needs a C++17 compiler and Eigen 3: apt-get install libeigen3-dev)"
    exit 1
  fi
  stamp_write native "$native_hash"
fi

[ "${IKD_SKIP_COLCON:-0}" = 1 ] && { log "IKD_SKIP_COLCON=1: skipping colcon builds"; exit 0; }

# ---------------------------------------------------------------- 5. colcon builds
# Build environment: the venv is the ROS prefix (an already-sourced system ROS
# install, if any, stays in AMENT_PREFIX_PATH/CMAKE_PREFIX_PATH after it).
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
case ":${AMENT_PREFIX_PATH:-}:" in *":$VENV:"*) ;; *) export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}";; esac
case ":${CMAKE_PREFIX_PATH:-}:" in *":$VENV:"*) ;; *) export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}";; esac
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"  # setuptools/colcon deprecation noise
# IKD_BUILD_NATIVE=OFF: step 4b built ikdiffuser_ros/_native in the source tree, which the
# symlink install links like every other file of the package.
CMAKE_ARGS=(-DPython3_EXECUTABLE="$VPY" -DPython3_FIND_VIRTUALENV=ONLY -DBUILD_TESTING=OFF
            -DCMAKE_BUILD_TYPE=Release -DIKD_BUILD_NATIVE=OFF)

# What invalidates a build: interface/CMake/package files by content, everything
# else by file list (the install is a symlink install, so edits to existing
# Python files show up without a rebuild; new or removed files need one).
tree_hash() {
  { for f in "$@"; do [ -f "$f" ] && sha256sum "$f"; done
    git ls-files -co --exclude-standard -- ikdiffuser_ros launch config models scripts/ikdiffuser_node 2>/dev/null \
      || find ikdiffuser_ros launch config models -type f 2>/dev/null
  } | sort | sha256sum | cut -d' ' -f1
}

main_hash="$(tree_hash CMakeLists.txt package.xml msg/*.msg srv/*.srv requirements/ros.txt)"
if stamp_ok colcon-main "$main_hash" && [ -f install/ikdiffuser_ros/share/ikdiffuser_ros/package.xml ]; then
  log "install/ (ikdiffuser_ros) up to date"
else
  log "colcon build: ikdiffuser_ros -> install/"
  colcon --log-base log build --base-paths "$ROOT" --packages-select ikdiffuser_ros \
      --symlink-install --build-base build --install-base install \
      --event-handlers parallel_status- \
      --cmake-args "${CMAKE_ARGS[@]}"
  stamp_write colcon-main "$main_hash"
fi

# build_test_ws STAMP SRC_DIR MARKER_PKG "DESCRIPTION" "NOTE" [one-job]: colcon-build the packages under SRC_DIR
# into test_ws/install unless the stamp (hash of SRC_DIR's files + requirements/ros.txt) and MARKER_PKG's
# package.xml show they are up to date. Unoptimised: test-only messages compile much faster at -O0.
# one-job: one package at a time, one compiler at a time (MAKEFLAGS=-j1), for C++ on a shared machine.
build_test_ws() {
  local stamp="$1" src="$2" marker="$3" desc="$4" note="$5" hash
  local -a jobs=()
  [ "${6:-}" = one-job ] && jobs=(env MAKEFLAGS=-j1)
  hash="$(hash_files $(find "$src" -type f | sort) requirements/ros.txt)"
  if stamp_ok "$stamp" "$hash" && [ -f "test_ws/install/$marker/share/$marker/package.xml" ]; then
    log "test_ws/install ($desc) up to date"
    return
  fi
  log "colcon build: $src -> test_ws/install $note"
  "${jobs[@]}" colcon --log-base test_ws/log build --base-paths "$src" \
      --build-base test_ws/build --install-base test_ws/install \
      --event-handlers parallel_status- ${jobs:+--executor sequential} \
      --cmake-args "${CMAKE_ARGS[@]/-DCMAKE_BUILD_TYPE=Release/-DCMAKE_BUILD_TYPE=}"
  stamp_write "$stamp" "$hash"
}

# Test-only MoveIt interfaces. A system with MoveIt installed (and sourced)
# uses its real moveit_msgs; the copy in test/interfaces is only built when no
# moveit_msgs other than our own test_ws one is importable.
real_moveit="$("$VPY" -c 'import moveit_msgs, os; print(os.path.dirname(moveit_msgs.__file__))' 2>/dev/null || true)"
if [ -n "$real_moveit" ] && [[ "$real_moveit" != "$ROOT/test_ws/"* ]]; then
  log "using the installed moveit_msgs ($real_moveit); not building test/interfaces"
else
  build_test_ws colcon-test-ws "$ROOT/test/interfaces" moveit_msgs \
    "moveit_msgs, octomap_msgs, object_recognition_msgs" "(a few minutes the first time)"
fi

# tf2 (the node's lookups of frames outside the robot, ikdiffuser_ros/ros/tf_frames.py, and the tf tests'
# /tf_static publisher), from source: no wheel exists. A sourced ROS install with tf2_ros is used as it is.
real_tf2="$("$VPY" -c 'import tf2_ros, os; print(os.path.dirname(tf2_ros.__file__))' 2>/dev/null || true)"
if [ -n "$real_tf2" ] && [[ "$real_tf2" != "$ROOT/test_ws/"* ]]; then
  log "using the installed tf2_ros ($real_tf2); not building geometry2"
elif [ -d "$ROS_SRC/geometry2" ]; then
  build_test_ws colcon-tf2 "$ROS_SRC/geometry2" tf2_ros_py "tf2, tf2_msgs, tf2_py, tf2_ros_py" \
    "(C++, one job: about a minute the first time)" one-job
else
  warn "no $ROS_SRC/geometry2: tf2 not built; the node resolves frames outside the robot from its" \
       "fixed_frame_transforms parameter only (the tf2 tests are skipped)"
fi

# Interface packages launch_ros needs (composition_interfaces), from source: no wheel exists.
if [ -d "$LAUNCH_WHEELS" ] && [ -d "$ROS_SRC/composition_interfaces" ]; then
  build_test_ws colcon-ros-src "$ROS_SRC/composition_interfaces" composition_interfaces composition_interfaces ""
elif [ -d "$LAUNCH_WHEELS" ]; then
  warn "no $ROS_SRC/composition_interfaces: launch_ros cannot import without it"
fi
# ---------------------------------------------------------------- 6. MoveIt kinematics plugin (optional)
# moveit_plugin/ and the rclcpp/moveit_core prefix it builds on (cached outside the repository), from
# ../shared/moveit_src when it exists; skipped with one log line otherwise (scripts/setup_moveit.sh).
bash "$ROOT/scripts/setup_moveit.sh" "$VENV"

log "done. Use: source scripts/ros_env.sh"
