"""Explanation methods behind one interface (see :mod:`transforms.methods.base`)."""

from transforms.methods.base import METHODS, Explanation, Method, get_method

__all__ = ["METHODS", "Explanation", "Method", "get_method"]
