"""Errors of the eplb domain package."""


class EplbError(ValueError):
    """Invalid input to eplb; the message names the problem and the fix."""
