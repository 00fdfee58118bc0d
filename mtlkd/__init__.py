"""mtlkd: one network for segmentation, depth and normals, distilled, exported and benchmarked."""

__version__ = "0.1.0"
