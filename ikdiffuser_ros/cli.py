"""The ``ikdiffuser`` command: one subcommand per module that defines ``register(subparsers)``.

Each module in :data:`MODULES` adds its subparser and sets ``func`` (``args -> exit code``).
Modules are imported only when the command runs, and a missing one is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: modules providing ``register(subparsers)``.
MODULES = [
    "ikdiffuser_ros.bench.fk",
    "ikdiffuser_ros.bench.ik",
    "ikdiffuser_ros.bench.requests",
    "ikdiffuser_ros.collision.srdf_collisions",
    "ikdiffuser_ros.data.generate",
    "ikdiffuser_ros.init_robot",
    "ikdiffuser_ros.training.model_card",
    "ikdiffuser_ros.training.trainer",
    "ikdiffuser_ros.viz.render",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ikdiffuser", description="IKDiffuser: diffusion-model inverse kinematics")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
