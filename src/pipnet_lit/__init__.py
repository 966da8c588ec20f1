"""pipnet-lit: PIPNet facial landmark detection with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
