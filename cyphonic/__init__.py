"""CYPHONIC: CYber PHysical Overlay Network over Internet Communication."""

__version__ = "0.1.0"
