"""kubetune's shared trainer: one entrypoint (`python -m kubetune_trainer`) driven by a TrainerConfig.

data prep → model + method → train (checkpoints, progress) → evaluate (forgetting guard) → artifacts.
"""

__version__ = "0.1.0"
