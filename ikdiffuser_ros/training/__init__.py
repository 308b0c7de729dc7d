"""Offline training of the denoiser (never imported by the node)."""
