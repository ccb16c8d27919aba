"""The one exception type that the CLI turns into a one-line message instead of a traceback."""


class UserError(Exception):
    """A mistake in the user's input (a path, a flag, a file): the message says what and how to fix it."""
