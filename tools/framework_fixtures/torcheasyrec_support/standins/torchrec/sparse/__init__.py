"""Stand-in for torchrec.sparse (see ../__init__.py)."""
