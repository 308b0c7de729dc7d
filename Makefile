SHELL := /bin/bash
.DEFAULT_GOAL := test
.PHONY: setup test test-ros demo bench-peers bench bench-request clean distclean

# Everything needed to run the node and the tests (idempotent; fast when nothing changed).
setup:
	bash scripts/setup.sh

# ruff (pyproject.toml's [tool.ruff]): undefined names, unused imports, syntax errors.
lint: setup
	.venv/bin/ruff check ikdiffuser_ros test scripts

# pytest exit code 5 ("no tests collected") is not a failure here.
test: setup lint
	source scripts/ros_env.sh && python -m pytest -q test $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test-ros: setup
	source scripts/ros_env.sh && python -m pytest -q test/ros $(PYTEST_ARGS)

demo: setup
	source scripts/ros_env.sh && bash scripts/demo.sh

# The peers of requirements/bench.txt (TRAC-IK, robotics-toolbox, pink), installed into .venv once.
BENCH_STAMP := .venv/.ikdiffuser-stamps/bench
bench-peers: setup
	@want="$$(cat requirements/bench.txt requirements/core.txt | sha256sum)"; \
	  if [ "$$(cat $(BENCH_STAMP) 2>/dev/null)" != "$$want" ]; then \
	    echo "[bench] installing requirements/bench.txt"; \
	    .venv/bin/python -m pip install -q -r requirements/bench.txt -c requirements/core.txt 2>&1 \
	      | grep -v ' is ignored' >&2; \
	    .venv/bin/python -c 'import pytracik, roboticstoolbox, pink' && echo "$$want" > $(BENCH_STAMP); fi

# IKDiffuser against TRAC-IK, robotics-toolbox, pink and KDL (minutes on 2 cores): rewrites the
# marked section of docs/benchmarks.md, the plots in docs/img/ and docs/bench/ik.json. Extra options: BENCH_ARGS.
bench: bench-peers
	source scripts/ros_env.sh && OMP_NUM_THREADS=1 ikdiffuser bench --json docs/bench/ik.json \
	  --docs docs/benchmarks.md --plots docs/img $(BENCH_ARGS)

# One target per IK call with a few ms of budget (ikdiffuser bench-request), the same peers: rewrites
# its marked section of docs/benchmarks.md, docs/img/bench_request_<robot>.png and
# docs/bench/request.json. Extra options: BENCH_ARGS (e.g. BENCH_ARGS="--robots panda baxter --targets 100").
bench-request: bench-peers
	source scripts/ros_env.sh && OMP_NUM_THREADS=1 ikdiffuser bench-request --json docs/bench/request.json \
	  --docs docs/benchmarks.md --plots docs/img $(BENCH_ARGS)

clean:
	rm -rf build install log test_ws moveit_ws ikdiffuser_ros/_native*.so .venv/.ikdiffuser-stamps/colcon-* .venv/.ikdiffuser-stamps/native

distclean: clean
	rm -rf .venv
