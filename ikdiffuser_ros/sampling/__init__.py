"""Sampling: the reverse-diffusion loop (sampler), objectives, the Levenberg-Marquardt refinement (lm),
the null-space polish (polish) and de-duplication of solutions (dedup)."""
