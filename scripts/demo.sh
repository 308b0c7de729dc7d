#!/usr/bin/env bash
# End-to-end demo (make demo): build, start ikdiffuser_node on the shipped baxter model, publish
# a planning scene (table + box), call get_ik_solutions for both arms and each arm, and
# compute_ik; print a summary and write a PNG (runs/demo/demo_baxter_scene.png: runs/ is git-ignored,
# so the demo leaves the checkout unmodified). The node starts through
# `ros2 launch ikdiffuser_ros ikdiffuser.launch.py` when launch is installed (make setup installs
# it when ../shared/wheels/launch exists), else demo_client starts the installed executable.
#   scripts/demo.sh [--model-path DIR] [--params-file FILE] [--png PATH]   (extra args go to demo_client)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -f install/ikdiffuser_ros/share/ikdiffuser_ros/package.xml ] || [ ! -d .venv ]; then
  bash scripts/setup.sh
fi
set +u  # colcon's setup scripts read unset variables
# shellcheck disable=SC1091
source scripts/ros_env.sh
set -u
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( $$ % 80 + 20 ))}"

args=("$@")
if ! grep -rqs '"fingerprint"' models/*/card.json 2>/dev/null && [[ " $* " != *" --model-path "* ]]; then
  # No shipped checkpoint yet: train a tiny stand-in so the plumbing can still be shown.
  tiny="${TMPDIR:-/tmp}/ikdiffuser_demo_tiny_baxter"
  echo "demo: WARNING: no checkpoint in models/; training a tiny stand-in in $tiny (poor samples, refinement does the work)"
  (cd /tmp && python -c "
from ikdiffuser_ros.training.trainer import TrainConfig, train
import pathlib
if not (pathlib.Path('$tiny') / 'card.json').is_file():
    train(TrainConfig.preset('tiny', robot='baxter', out_dir='$tiny', max_steps=200), progress=False)
")
  args+=(--model-path "$tiny")
fi

# Starts `ros2 launch` in the background with the node options of "$@" (--model-path,
# --params-file; paths taken relative to the repository) and waits for the node to be ready.
# Sets LAUNCH_PID and CLIENT_ARGS (the other options, plus --no-node).
start_launch() {
  local launch_args=(robot:=baxter) log="${TMPDIR:-/tmp}/ikdiffuser_demo_launch.$$.log"
  CLIENT_ARGS=(--no-node)
  while [ $# -gt 0 ]; do
    case "$1" in
      --model-path) launch_args+=("model_path:=$(realpath -m "$2")"); shift 2;;
      --model-path=*) launch_args+=("model_path:=$(realpath -m "${1#*=}")"); shift;;
      --params-file) launch_args+=("params_file:=$(realpath -m "$2")"); shift 2;;
      --params-file=*) launch_args+=("params_file:=$(realpath -m "${1#*=}")"); shift;;
      *) CLIENT_ARGS+=("$1"); shift;;
    esac
  done
  echo "demo: ros2 launch ikdiffuser_ros ikdiffuser.launch.py ${launch_args[*]} (log: $log)"
  (cd /tmp && exec ros2 launch ikdiffuser_ros ikdiffuser.launch.py "${launch_args[@]}") >"$log" 2>&1 &
  LAUNCH_PID=$!
  trap 'kill -INT "$LAUNCH_PID" 2>/dev/null; wait "$LAUNCH_PID" 2>/dev/null' EXIT
  local deadline=$((SECONDS + 120))
  until grep -qs "ready in" "$log"; do
    if ! kill -0 "$LAUNCH_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      cat "$log" >&2
      echo "demo: the node did not come up" >&2
      return 1
    fi
    sleep 0.5
  done
  grep "ready in" "$log"
}

# Run from outside the source tree so `ikdiffuser_ros` resolves to the install tree (it holds msg/, srv/).
if command -v ros2 >/dev/null && python -c 'import launch_ros.actions' 2>/dev/null; then
  start_launch "${args[@]}"
  cd /tmp
  python -m ikdiffuser_ros.ros.demo_client "${CLIENT_ARGS[@]}"
else
  cd /tmp
  exec python -m ikdiffuser_ros.ros.demo_client "${args[@]}"
fi
