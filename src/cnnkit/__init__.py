"""cnnkit: every part of a complete CNN guide, runnable."""
__version__ = "0.1.0"
