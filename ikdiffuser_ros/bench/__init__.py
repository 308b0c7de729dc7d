"""Benchmarks: ``ikdiffuser bench-fk`` (kinematics) and ``ikdiffuser bench`` (IK vs peers)."""
