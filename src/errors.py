"""The one exception type for bad user input, and the CLI wrapper that turns it into a one-line error."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input or config: printed as one line, exit code 2, no traceback."""


def env_seconds(name: str, default: float) -> float:
    """A number of seconds from the environment variable `name` (default when unset); anything else than a finite
    number >= 0 is a UserError."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise UserError(f"{name}={raw!r} must be a number of seconds >= 0")
    return value


def check_environment() -> None:
    """The environment variables the kit reads, checked before a command does anything."""
    env_seconds("PROGRESS_INTERVAL", 30.0)


def cli(main: Callable[[list[str] | None], object]) -> Callable[[list[str] | None], object]:
    """Decorate a `main(argv)` so a UserError prints `error: ...` and exits 2; the environment is checked first."""

    def wrapped(argv: list[str] | None = None):
        try:
            check_environment()
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except BrokenPipeError:  # `... | head`: the reader is gone, nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
        except PermissionError as e:  # a file or folder the checks could not even look at
            print(f"error: permission denied: {e.filename or e}: fix its permissions, or point the setting "
                  "elsewhere", file=sys.stderr)
            raise SystemExit(2) from None

    wrapped.__doc__ = main.__doc__
    wrapped.__name__ = main.__name__
    return wrapped


class ArgParser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: `error: <prog>: <message> (see <prog> --help)`, exit 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)
