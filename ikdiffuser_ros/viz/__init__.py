"""Pictures of IK solutions (matplotlib, no ROS)."""
