"""Image super-resolution workbench: models, MATLAB-exact resize, tiled inference."""

__version__ = "0.1.0"
