"""Sampling: the reverse-diffusion loop (sampler), objectives and refinement."""
