"""What it takes to run Twitter's the-algorithm-ml here, and nothing more.

twitter_tree.py imports Twitter's repository, unmodified, as the package
`tml` (the name its own imports use); stubs.py holds the two stand-ins for
dependencies it imports but never uses on the path from features to scores.
"""
