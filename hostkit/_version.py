"""hostkit's version, in a module of its own so any module can read it without cycles."""

__version__ = "0.1.0"
