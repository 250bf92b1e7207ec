from setuptools import find_packages, setup

setup(
  name='diffusion_tf',
  version='0.1.0',
  description=('Denoising Diffusion Probabilistic Models (Ho, Jain, Abbeel 2020) on TensorFlow 1.15 (Python 3.7) '
               'or 2.15 (Python 3.11)'),
  packages=find_packages(include=['diffusion_tf', 'diffusion_tf.*']),
  python_requires='>=3.6,<3.12',
)
