"""Collision models: the planning-scene mirror (world), differentiable spheres, exact FCL checks."""
