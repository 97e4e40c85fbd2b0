"""The suite's kinds of bad input (the verifier's InputError, for data and specs), and how its scripts show them:
one line, without a traceback."""
import functools
import sys

from gradcheck.errors import InputError


class DataError(InputError):
    """A data file is missing, malformed or inconsistent."""


class SpecError(InputError):
    """An experiment spec is missing, malformed or names something unknown."""


def exit_cleanly_on_input_error(main):
    """Decorate a script's main(): an InputError becomes `error: ...` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except InputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; a training run resumes from its last finished epoch when the same command "
                  "runs again", file=sys.stderr)
            return 130

    return wrapper
