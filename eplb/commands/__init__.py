"""Sub-commands of the ``eplb`` CLI, one module each (see :mod:`eplb.cli`)."""
