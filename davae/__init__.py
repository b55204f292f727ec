"""DA-VAE Inspector's library: data, augmentation, model, training, scoring and evaluation.

Import the submodules you need (``davae.training``, ``davae.bundle``, ...);
this package module stays light so that importing it loads no torch.
"""

__version__ = "0.1.0"
