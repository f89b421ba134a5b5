"""dlcli: train neural networks from Hydra YAML configs."""

__version__ = "0.1.0"
