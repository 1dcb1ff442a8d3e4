"""A typed asyncio client of the dubbing service.

::

    from dubbing.client import DubbingClient, load_transcript
    from dubbing.v1 import dubbing_pb2 as pb

    async with DubbingClient() as client:  # DUBBING_GATEWAY or 127.0.0.1:50051
        job = await client.submit(
            pb.DubRequest(
                target_language="fr",
                provider="local",
                transcript=pb.TranscriptDubbing(script=load_transcript("talk.json")),
            )
        )
        async for change in client.watch(job.id):
            print(change.stage, change.progress)
        await client.download(job.id, "talk.fr.wav")

Errors are :class:`DubbingError` subclasses (see ``_errors`` for the tree).
"""

from ._assets import UPLOAD_CHUNK_BYTES, background_audio
from ._client import DubbingClient, RetryPolicy
from ._errors import (
    DeadlineExceeded,
    DubbingError,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    JobCancelled,
    JobFailed,
    NotFound,
    Unavailable,
)
from ._transcript import TranscriptError, load_transcript, parse_time, parse_transcript

__all__ = [
    "UPLOAD_CHUNK_BYTES",
    "DeadlineExceeded",
    "DubbingClient",
    "DubbingError",
    "FailedPrecondition",
    "IntegrityError",
    "InvalidArgument",
    "JobCancelled",
    "JobFailed",
    "NotFound",
    "RetryPolicy",
    "TranscriptError",
    "Unavailable",
    "background_audio",
    "load_transcript",
    "parse_time",
    "parse_transcript",
]
