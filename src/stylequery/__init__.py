"""stylequery: composed image retrieval for fashion.

A product photo plus a change in words ("black to green") in, the matching catalogue
images out.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
