"""The errors hific_tf raises for problems a user can fix.

Every user-facing failure is a `HificError`, whose message is one line; the command line
prints it as `hific: error: ...` and exits 1, or 2 for a `UsageError` (arguments that parse
but make no sense). Other exceptions are bugs and keep their tracebacks under --verbose.
Each subclass also derives from the builtin its callers would expect (ValueError,
FileNotFoundError), so library users can catch either.
"""


class HificError(Exception):
  """A problem with the input, the data or the environment, explained in one line."""


class UsageError(HificError, ValueError):
  """Arguments that make no sense (unknown config, bad rate list...): exit code 2."""


class InputNotFoundError(HificError, FileNotFoundError):
  """An input path (image, folder, model) that does not exist or holds nothing usable."""


class OutputExistsError(HificError, FileExistsError):
  """An output that exists already: hific never overwrites without --force."""


class InvalidModelError(HificError, ValueError):
  """A file or folder that is not the model it was given as (SavedModel, weights, archive)."""
