"""The whole stack with the gateway on PostgreSQL (DSN from DUBBING_TEST_POSTGRES_DSN)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.conftest import StackFactory
from tests.helpers import transcript_request

DSN = os.environ.get("DUBBING_TEST_POSTGRES_DSN", "")
pytestmark = pytest.mark.skipif(
    not DSN, reason="set DUBBING_TEST_POSTGRES_DSN to run the gateway on PostgreSQL"
)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"stack_{uuid.uuid4().hex[:12]}"
    yield name
    engine = create_async_engine(DSN)
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    await engine.dispose()


async def test_job_end_to_end_on_postgres(make_stack: StackFactory, schema: str) -> None:
    stack = make_stack(DUBBING_DATABASE_URL=f"{DSN}?schema={schema}").start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        request = transcript_request(request_id=str(uuid.uuid4()))
        first = await stub.SubmitDub(pb.SubmitDubRequest(request=request))
        again = await stub.SubmitDub(pb.SubmitDubRequest(request=request))
        assert first.created and not again.created and again.job.id == first.job.id
        versions = [r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=first.job.id))]
        assert versions[-1].state == pb.Job.State.STATE_SUCCEEDED, versions[-1].error
        listed = await stub.ListJobs(pb.ListJobsRequest(page_size=10))
        assert [j.id for j in listed.jobs] == [first.job.id]
        chunks = [
            part.chunk
            async for part in stub.DownloadResult(pb.DownloadResultRequest(job_id=first.job.id))
        ]
        assert sum(len(c) for c in chunks) == versions[-1].result.size_bytes
    url = make_url(DSN)
    where = f"PostgreSQL at {url.host}:{url.port or 5432}/{url.database} (schema {schema})"
    assert where in stack.gateway.wait_for("job_store_opened")
