"""The diffusion model: denoiser network, noise schedule, normalizer, checkpoint format."""
