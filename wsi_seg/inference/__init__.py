"""Whole-slide prediction: tiling a slide through a model and stitching the result."""
