"""Reward shapes: PRM step scores -> shaped step rewards, one registered function each.

Importing this package registers every shape; the registry is in :mod:`.registry`.
"""
from critic_free_rl.rewards.shapes.registry import NEEDS, Shape, get_shape, register_shape, shape_names

from critic_free_rl.rewards.shapes import min_form, paper, progress  # noqa: F401,E402  (registers them)

__all__ = ["NEEDS", "Shape", "get_shape", "register_shape", "shape_names"]
