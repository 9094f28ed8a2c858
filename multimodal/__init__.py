"""Audio-visual emotion recognition over time, offline and on a CPU."""
__version__ = "0.1.0"
