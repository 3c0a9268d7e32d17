"""``globus-staging`` commands the doubles add: ``demo`` and ``emulator``.

Registered under the entry-point group ``pbs_globus_staging.commands`` (sim/setup.cfg);
each module has ``register(sub)``, as the product's own commands do.
"""
