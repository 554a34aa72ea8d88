"""Batches, fine-tuning jobs and background responses: recorded when a key creates one, charged
once when upstream reports it finished (seen by the watcher or in a client's read)."""

from proxy.jobs.hook import track
from proxy.jobs.kinds import JOB_CREATIONS
from proxy.jobs.watcher import job_watcher

__all__ = ["JOB_CREATIONS", "job_watcher", "track"]
