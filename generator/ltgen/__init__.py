"""ltgen: generate plain-PyTorch training projects from a short spec, and regenerate them without losing edits."""

__version__ = "0.1.0"
