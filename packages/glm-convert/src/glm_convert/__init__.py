from glm_convert.__about__ import __version__

__all__ = ["__version__"]
