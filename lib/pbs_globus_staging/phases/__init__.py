"""The staging agent's phases, one module each, driven by ``agent.Agent``.

Each phase exposes ``run_cycle(ctx, <its state>, *, now)``: it takes the
``context.Context`` (journal, PBS control, backend, settings, alert sink,
log, the run's clock and budget) and the state objects it reads or writes,
all owned by the loop -- never the agent itself.  Phases gather facts, ask
``decide`` what to do, and apply the answer.
"""
