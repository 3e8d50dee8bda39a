"""imbadv's SLURM launcher: submitit's, waiting for every job and naming each one that did not finish.

submitit's own launcher returns `[job.results()[0] for job in jobs]`: the first cancelled,
timed-out or killed job raises there, the command stops watching the rest of the sweep and a
traceback names none of the jobs. This one waits for every job, then prints one line per
unfinished job (its number, overrides, SLURM id and state) and ends the command with exit code 1.
Running the same command again finishes the sweep: finished jobs' models and results come from
the store (SLURM's convention for a cancelled array task: resubmit it). A job that wrote its
result before SLURM ended it is finished, whatever state SLURM records. docs/cluster.md.
Hydra accepts launchers only from the `hydra_plugins` namespace, hence this package beside
imbadv/; conf/launcher/slurm.yaml names it in `hydra.launcher._target_`. Without the `slurm` extra
(hydra-submitit-launcher) it defines nothing, and Hydra's plugin scan passes it by quietly.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, filter_overrides

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # no `slurm` extra: launcher=slurm is then refused as an unknown plugin
    SlurmLauncher = None

EXIT_UNFINISHED = 1


class _Watched:
    """A submitted job whose `results()` waits and never raises for a job that produced nothing."""

    def __init__(self, job: Any, unfinished: list) -> None:
        self.job, self.unfinished = job, unfinished

    def results(self) -> list[JobReturn | None]:
        from submitit.core.utils import UncompletedJobError

        try:
            return self.job.results()
        except UncompletedJobError:  # cancelled, timed out, killed: no result file
            self.unfinished.append(self.job)
            return [None]


if SlurmLauncher is not None:

    class SweepSlurmLauncher(SlurmLauncher):
        """`launcher=slurm`: submitit's SLURM launcher that reports every unfinished job by name."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            import submitit

            unfinished: list = []
            submitted: list = []
            original = submitit.AutoExecutor.map_array

            def watched(executor: Any, fn: Any, *iterables: Any) -> list[_Watched]:
                jobs = original(executor, fn, *iterables)
                submitted.extend(jobs)
                return [_Watched(job, unfinished) for job in jobs]

            # The parent's launch, unchanged, with its jobs made visible to us.
            submitit.AutoExecutor.map_array = watched
            try:
                returns = super().launch(job_overrides, initial_job_idx)
            finally:
                submitit.AutoExecutor.map_array = original
            if unfinished:
                report_unfinished(unfinished, submitted, job_overrides, initial_job_idx)
            return returns


def varying(job_overrides: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each job's overrides less those every job shares: what tells the jobs apart."""
    if len(job_overrides) < 2:
        return [list(o) for o in job_overrides]
    common = set(job_overrides[0]).intersection(*job_overrides[1:])
    return [[o for o in overrides if o not in common] for overrides in job_overrides]


def report_unfinished(
    unfinished: list, submitted: list, job_overrides: Sequence[Sequence[str]], first: int
) -> None:
    """One line per job that produced no result, then exit 1 (after every job has ended)."""
    swept = varying([filter_overrides(o) for o in job_overrides])
    for job in unfinished:
        index = submitted.index(job)
        overrides = " ".join(swept[index])
        print(
            f"imbadv: error: job #{first + index} ({overrides}) ended {job.state} in SLURM "
            f"(job {job.job_id}) without a result",
            file=sys.stderr,
        )
    done = len(submitted) - len(unfinished)
    print(
        f"imbadv: error: {len(unfinished)} of {len(submitted)} jobs unfinished ({done} finished, "
        "kept in the store): run the same command again to finish the sweep",
        file=sys.stderr,
    )
    sys.exit(EXIT_UNFINISHED)
