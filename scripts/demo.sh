#!/usr/bin/env bash
# End-to-end demo (make demo): build, start ikdiffuser_node from the install tree on the
# shipped baxter model, publish a planning scene (table + box), call get_ik_solutions for
# both arms and each arm, and compute_ik; print a summary and write a PNG.
#   scripts/demo.sh [--model-path DIR] [--png PATH]   (extra args go to demo_client)
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
# Run from outside the source tree so `ikdiffuser_ros` resolves to the install tree (it holds msg/, srv/).
cd /tmp
exec python -m ikdiffuser_ros.ros.demo_client "${args[@]}"
