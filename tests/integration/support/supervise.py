"""Restarting workers that exit on their own, as Kubernetes would (restartPolicy: Always).

A worker stops itself when continuing could be wrong (e.g. an offset gap: topology/transport.py);
the deployment restarts it and it resumes from committed offsets. Chaos tests run this beside
their kills so that a self-stop is part of the run, counted, not a stall.
"""

from __future__ import annotations

import asyncio

from cdr_mediation.stack.pipeline import LocalPipeline


async def restart_exited(run: LocalPipeline, names: list[str], restarts: list[str], *, every_s: float = 1.0) -> None:
    """Until cancelled: every `every_s`, start again each of `names` whose process has exited."""
    while True:
        for name in names:
            process = run.processes.get(name)
            if process is not None and process.poll() is not None:
                restarts.append(f"{name}:{process.returncode}")
                run.start(name, "worker")
        await asyncio.sleep(every_s)  # a polling period, not a wait for a condition
