"""Globus data staging for PBS: server hooks plus a central staging agent.

Modules that PBS event hooks import (``errors``, ``request``, ``siteconfig``,
``hookcore``, ``journal``, ``states``, ``policy``, ``_py36``) use the standard
library only and run on Python 3.6+ (what PBS embeds on EL8 and in PBS
Professional).  Everything that talks to Globus lives in modules the hooks never
import.
"""

__version__ = "0.1.0"
