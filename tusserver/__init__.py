"""tusserver: a resumable upload server implementing tus 1.0.0."""

__version__ = "0.1.0"
TUS_VERSION = "1.0.0"
