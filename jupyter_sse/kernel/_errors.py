"""The one exception the progress system raises into user code."""

from __future__ import annotations

__all__ = ["JobCancelled"]


class JobCancelled(Exception):
    """Raised at the next step of a job whose cancellation was asked for.

    It subclasses :class:`Exception` (not ``BaseException``) so that a cell's usual
    ``except Exception`` cleanup still runs; the job itself is already marked ``cancelled``.
    """

    def __init__(self, job_id: str | None = None, message: str | None = None) -> None:
        self.job_id = job_id
        if message is None:
            message = f"job {job_id}: cancellation was requested" if job_id else "cancellation was requested"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[JobCancelled], tuple[str | None, str]]:
        # keep job_id across pickling (multiprocessing, nbclient error reports)
        return (type(self), (self.job_id, str(self)))
