#!/usr/bin/env bash
# The MoveIt kinematics plugin (moveit_plugin/) and what it builds on, for `make setup` (step 6 of
# scripts/setup.sh). Needs ../shared/moveit_src (rclcpp, pluginlib and MoveIt's moveit_core subset from
# source, see its README.md); without it this step is skipped and so are the plugin's tests.
#   1. the Debian packages moveit_src/README.md lists, with apt-get, when missing
#   2. the MoveIt prefix: moveit_src/build.sh into a cache outside the repository, so fresh clones on
#      the same machine (at the same path) reuse it: $IKD_CACHE/moveit-<hash of the sources, the ROS
#      wheels, Python, the venv's path>
#      ($IKD_CACHE defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/ikdiffuser); built only when that is new
#   3. the plugin package: moveit_plugin/ -> moveit_ws/install (git-ignored); moveit_ws/env.sh is
#      what a program using both needs (sourced by test/moveit_plugin/test_plugin.py)
# usage: setup_moveit.sh VENV   (IKD_MOVEIT_SRC=DIR overrides ../shared/moveit_src; IKD_FORCE=1 rebuilds
# the plugin)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$(realpath "$1")"
SRC="$(realpath -m "${IKD_MOVEIT_SRC:-$ROOT/../shared/moveit_src}")"
WS="$ROOT/moveit_ws"
STAMP="$VENV/.ikdiffuser-stamps/colcon-moveit-plugin"
log() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }

if [ ! -f "$SRC/build.sh" ]; then
  log "no $SRC: MoveIt kinematics plugin not built (test/moveit_plugin will be skipped)"
  exit 0
fi

# ---------------------------------------------------------------- 1. Debian packages
DEBS=(libeigen3-dev libboost-dev libboost-filesystem-dev libboost-date-time-dev libboost-program-options-dev
      libboost-system-dev libboost-thread-dev libboost-iostreams-dev libboost-regex-dev libboost-random-dev
      libboost-chrono-dev libboost-serialization-dev liburdfdom-dev liburdfdom-headers-dev libfcl-dev
      liboctomap-dev libassimp-dev libqhull-dev liborocos-kdl-dev libbullet-dev libfmt-dev libtinyxml2-dev
      libconsole-bridge-dev libyaml-cpp-dev libcurl4-openssl-dev libexpected-dev)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    warn "MoveIt plugin not built: missing Debian packages (apt-get install as root): ${missing[*]}"
    exit 0
  fi
  log "installing ${#missing[@]} Debian packages for the MoveIt build with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

# ---------------------------------------------------------------- 2. the MoveIt prefix (cached)
# Keyed by the sources' content and the venv's path: the prefix's exported CMake targets name the venv
# that built it (numpy's include folder), so a checkout re-cloned at the same path reuses it, one
# elsewhere builds its own.
tree_sum() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
key="$({ tree_sum "$SRC"; tree_sum test/interfaces; cat requirements/ros.txt; "$VENV/bin/python" --version; uname -m
         echo "$VENV"; } | sha256sum | cut -c1-16)"
CACHE_ROOT="${IKD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ikdiffuser}"
PREFIX="$CACHE_ROOT/moveit-$key"
mkdir -p "$PREFIX"
(
  flock 9  # two checkouts setting up at once: one builds, the other waits and reuses
  if [ -f "$PREFIX/.complete" ]; then
    log "MoveIt prefix up to date ($PREFIX)"
  else
    log "building rclcpp, pluginlib and moveit_core from $SRC into $PREFIX (about 12 minutes on 2 cores; log: $PREFIX/build.log)"
    start=$(date +%s)
    if ! INTERFACES="$ROOT/test/interfaces" bash "$SRC/build.sh" "$VENV" "$PREFIX" >"$PREFIX/build.log" 2>&1; then
      tail -30 "$PREFIX/build.log" >&2
      warn "the MoveIt build failed (log: $PREFIX/build.log)"
      exit 1
    fi
    touch "$PREFIX/.complete"
    log "MoveIt prefix built in $(( $(date +%s) - start )) s"
  fi
) 9>"$PREFIX/.lock"

# ---------------------------------------------------------------- 3. the plugin
# The prefix's overlay of the fastdds CMake config and its links to the wheels' bundled libraries name
# the venv that built it: this checkout's venv gets its own (mk_overrides.py, under a second).
mkdir -p "$WS"
if [ "$(cat "$WS/overrides/.venv_path" 2>/dev/null)" != "$VENV" ]; then
  rm -rf "$WS/overrides"
  "$VENV/bin/python" "$SRC/mk_overrides.py" "$VENV" "$WS/overrides" >/dev/null
  echo "$VENV" >"$WS/overrides/.venv_path"
fi
PYLIBDIR="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
PYLIB="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LDLIBRARY"))')"
cat >"$WS/env.sh" <<EOF
# written by scripts/setup_moveit.sh: source after scripts/ros_env.sh to run programs using moveit_plugin
export IKD_MOVEIT_PREFIX="$PREFIX"
COLCON_CURRENT_PREFIX="$PREFIX/install" . "$PREFIX/install/local_setup.sh"
COLCON_CURRENT_PREFIX="$WS/install" . "$WS/install/local_setup.sh"
export LD_LIBRARY_PATH="$VENV/lib:$WS/overrides/lib:\$LD_LIBRARY_PATH"
EOF

plugin_hash="$({ tree_sum moveit_plugin; cat msg/*.msg srv/*.srv; echo "$PREFIX"; } | sha256sum | cut -d' ' -f1)"
if [ "${IKD_FORCE:-0}" != 1 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$plugin_hash" ] \
   && [ -f "$WS/install/local_setup.sh" ]; then
  log "moveit_ws/install (ikdiffuser_kinematics_plugin) up to date"
  exit 0
fi
log "colcon build: moveit_plugin -> moveit_ws/install"
(
  export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" PYTHONWARNINGS=ignore
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$WS/overrides:$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$VENV/lib:$WS/overrides/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  set +u  # the MoveIt prefix, and install/ for ikdiffuser_ros's C++ interfaces
  COLCON_CURRENT_PREFIX="$PREFIX/install" . "$PREFIX/install/local_setup.sh"
  COLCON_CURRENT_PREFIX="$ROOT/install" . "$ROOT/install/local_setup.sh"
  set -u
  OV="-L$WS/overrides/lib -Wl,-rpath-link,$WS/overrides/lib"
  colcon --log-base "$WS/log" build --base-paths "$ROOT/moveit_plugin" --build-base "$WS/build" \
    --install-base "$WS/install" --event-handlers parallel_status- \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_VIRTUALENV=ONLY \
      -DCMAKE_BUILD_TYPE=Release "-DCMAKE_SHARED_LINKER_FLAGS=$OV" \
      "-DCMAKE_EXE_LINKER_FLAGS=$OV -Wl,-rpath,$PYLIBDIR -Wl,--no-as-needed $PYLIBDIR/$PYLIB"
)
mkdir -p "$(dirname "$STAMP")"
echo "$plugin_hash" >"$STAMP"
