"""Placement methods: each turns loads [L, E] and a Topology into a placement.

The registry and the helpers around it live in :mod:`eplb.methods.registry`; this package
re-exports them. Each other module of the package registers one or more methods on import.
"""
from eplb.methods.registry import (METHODS, MethodOutput, check_options, check_time_limit, describe_methods,
                                   get_method, method_options, methods, register)

__all__ = ["MethodOutput", "METHODS", "register", "get_method", "methods", "describe_methods", "method_options",
           "check_options", "check_time_limit"]
