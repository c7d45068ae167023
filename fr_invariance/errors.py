"""Errors a user can cause (DESIGN §2): one base, :class:`FrInvarianceError`, subclassed per concern.

The entry points (``train.py``, ``evaluate.py``) print exactly these as one ``error: <message>`` line and
exit with status 2; any other exception is a bug and keeps its traceback. A message names the config key,
the value and what is allowed (or the fix).

Concerns: :class:`ConfigurationError` (a config value or combination; also unknown options and keys),
:class:`MissingPathError` (a configured file or folder that does not exist), :class:`InputDataError`
(a file that exists but cannot be used), :class:`TrainingError` (a run that cannot go on, e.g. a NaN loss).
Modules subclass these for their own cases (``CheckpointError``, ``DataFormatError``, ...).
"""


class FrInvarianceError(Exception):
    """Base of every error a user can cause; the CLI prints it as one line (exit code 2)."""


class ConfigurationError(FrInvarianceError, ValueError):
    """An invalid value or combination in the Hydra configuration; the message names the key and the fix.

    Also a ``ValueError``, so callers of the library functions that catch ``ValueError`` keep working."""


class MissingPathError(FrInvarianceError, FileNotFoundError):
    """A file or folder named in the configuration does not exist (checkpoint, weights, data root, ...)."""


class InputDataError(FrInvarianceError, ValueError):
    """A file or folder exists but its content cannot be used (wrong format, wrong shapes, no samples)."""


class TrainingError(FrInvarianceError, RuntimeError):
    """A training run cannot go on for a reason the user can act on (e.g. the loss became NaN / infinite)."""


class UnsafeFileError(ConfigurationError):
    """A file from elsewhere holds a Python object that loading it would have to import and call (it could
    run code); it was refused before anything ran. The message names the file and the refused type."""


class UntrustedCheckpointError(UnsafeFileError):
    """A checkpoint holds a type outside the tensors-only allow-list; ``trust_checkpoint=true`` loads it
    with full unpickling, for a file whose source the user trusts."""


class NotACheckpointError(ConfigurationError):
    """A weights/checkpoint file that ``torch.load`` cannot read (not written by ``torch.save``, truncated...)."""
