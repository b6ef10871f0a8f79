"""Stand-in for torchrec.modules (see ../__init__.py)."""
