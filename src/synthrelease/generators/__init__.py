"""Generators: registry + ``Generator`` protocol (fit / sample / save / load) and their implementations.

``create_generator(name, config)`` makes one; ``available_generators()`` lists the names. Implementations import
torch and MONAI, so they load only when asked for.
"""

from synthrelease.generators.registry import available_generators, create_generator, get_generator_class

__all__ = ["available_generators", "create_generator", "get_generator_class"]
