"""Errors of the eplb domain package."""


class EplbError(ValueError):
    """Invalid input to eplb; the message names the problem and the fix."""


class UnknownOptionError(EplbError, TypeError):
    """A method was given an option it does not take; the message lists the options it does take.
    A TypeError, as for any call with an unexpected keyword, and an EplbError for the command line."""
