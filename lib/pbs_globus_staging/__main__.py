"""``python -m pbs_globus_staging``: the same as the ``globus-staging`` command
(the periodic hook uses this form with the interpreter named in its config)."""
import sys

from .cli import main

sys.exit(main())
