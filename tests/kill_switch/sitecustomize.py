"""Read by the Python of a run started with this folder on PYTHONPATH (the
kill test's runs). With NEXUS_TEST_KILL_AT_STEP=k set, the run kills itself
with SIGKILL just before the k-th step (from 0) that has something to run in
its direction, in the order yoyo runs them: kill -9 between two steps, at
exactly the step asked for, whatever the server is doing."""

import os

if "NEXUS_TEST_KILL_AT_STEP" in os.environ:
    import signal

    from yoyo import migrations

    target, started = int(os.environ["NEXUS_TEST_KILL_AT_STEP"]), [0]

    def counted(direction: str):
        run = getattr(migrations.MigrationStep, direction)

        def step(self, backend, force=False):
            if getattr(self, f"_{direction}") is not None:
                if started[0] == target:
                    os.kill(os.getpid(), signal.SIGKILL)
                started[0] += 1
            return run(self, backend, force)
        return step

    migrations.MigrationStep.apply = counted("apply")
    migrations.MigrationStep.rollback = counted("rollback")
