"""The project's exception types.

Stdlib only: imported by PBS event hooks.

Two families, following Balsam's site services: errors a later cycle may
overcome (``RetryableError``) and errors that settle the outcome
(``FatalError``).  Request and config errors are what a person must fix.
"""
from typing import Optional


class StagingError(Exception):
    """Base class for every error this package raises on purpose."""


class RequestError(StagingError, ValueError):
    """A staging request value is malformed or not allowed.

    ``str(err)`` is one line that names the offending part and shows the
    expected form; the queuejob hook passes it to ``e.reject`` so it is what
    ``qsub:`` prints.  It never contains a traceback or a secret.
    """

    def __init__(self, message: str, *, resource: Optional[str] = None) -> None:
        message = " ".join(str(message).split())  # always one line
        if resource:
            message = f"{resource}: {message}"
        super().__init__(message)
        self.resource = resource


class ConfigError(StagingError):
    """The site configuration is invalid; the message names the key and the file."""


class RetryableError(StagingError):
    """Something outside our control failed for now (network, 429, 5xx, PBS down,
    journal locked).  Nothing changed; try again in a later cycle."""


class FatalError(StagingError):
    """The operation cannot succeed as asked; the message says why (Globus's own
    error text where there is one)."""


class WaitingForUser(StagingError):
    """Globus needs the user to act (log in again, give consent).

    ``action`` is the command the user must run, shown in the job comment and
    in alerts.
    """

    def __init__(self, message: str, *, action: str = "", code: str = "") -> None:
        super().__init__(message)
        self.action = action
        self.code = code
