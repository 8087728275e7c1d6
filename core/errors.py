"""Errors that may be shown to a person.

``UserError(message, hint)`` is the only exception the CLI or GUI shows as-is: *message* says what
went wrong and where, *hint* what to do about it. Anything else is a bug.
"""


class UserError(Exception):
    def __init__(self, message: str, hint: str = "", *, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class LockedError(UserError):
    """The memory cannot be opened with the key at hand."""


class BadInputError(UserError):
    """A file or value given by the user is malformed; nothing was changed."""
