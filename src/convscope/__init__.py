"""convscope: train convolutional networks, measure them honestly, show what they look at."""

__version__ = "0.1.0"
