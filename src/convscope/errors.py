"""User-facing errors.

Anything the user can fix (a path, a recipe field, a corrupt image) raises
:class:`UserError`; the command line prints it as one ``error: ...`` line and
exits with status 2. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by the user's input, reported without a traceback."""
