"""Errors caused by the user's input: scripts print them as one line, without a traceback."""
import functools
import sys


class SuiteError(Exception):
    """Bad input (a file, an argument, a spec): the message names it and says what is wrong."""


class DataError(SuiteError):
    """A data file is missing, malformed or inconsistent."""


class SpecError(SuiteError):
    """An experiment spec is missing, malformed or names something unknown."""


def exit_cleanly_on_suite_error(main):
    """Decorate a script's main(): a SuiteError becomes `error: ...` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SuiteError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; a training run resumes from its last finished epoch when the same command "
                  "runs again", file=sys.stderr)
            return 130

    return wrapper
