"""diffusion_tf: Denoising Diffusion Probabilistic Models (Ho, Jain, Abbeel 2020) on TensorFlow 1.15."""
