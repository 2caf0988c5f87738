"""Errors that mean bad input or an unusable environment: the CLI prints them without a traceback.

This module imports nothing, so every layer can mark its own error types with @user_error and the
CLI works in environments that have only part of the dependencies (the Pi inference venv).
"""

from typing import TypeVar

ErrorType = TypeVar("ErrorType", bound=type[BaseException])

USER_ERRORS: list[type[BaseException]] = []


def user_error(error_type: ErrorType) -> ErrorType:
    """Class decorator: this error reaches the user as one line, `edgefed: error: ...`, exit status 2."""
    if error_type not in USER_ERRORS:
        USER_ERRORS.append(error_type)
    return error_type


register_user_error = user_error


@user_error
class UsageError(ValueError):
    """A command-line value is invalid; the message names it."""
