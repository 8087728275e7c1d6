"""Mneme: a private second memory for the desktop."""

__version__ = "0.1.0"
