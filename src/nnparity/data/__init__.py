"""Data files shipped with nnparity: ``or.csv``, the notebook's OR table."""
