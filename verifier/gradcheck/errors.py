"""The one error the verifier raises for its caller's input: a model, an argument, a file, a place to write."""


class InputError(Exception):
    """Bad input: the message names it, says what is wrong and how to put it right. Command-line tools print it as
    one line and exit 2, without a traceback."""
