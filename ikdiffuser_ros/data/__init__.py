"""Offline datasets of (joint configuration, end-effector poses)."""
