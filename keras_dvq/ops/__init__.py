"""Numerical building blocks outside any layer: per-code histograms and
sums (one scatter-add), and NumPy k-means for codebook initialization."""
