"""Errors raised by the solvers on bad input."""


class SolverInputError(ValueError):
    """Input to a solver is invalid; the message says what is wrong and how to fix it."""
