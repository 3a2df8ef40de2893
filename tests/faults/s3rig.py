"""A tus server on S3 + Redis whose S3 traffic goes through a fault-injecting, recording proxy
(``s3proxy``), plus a boto3 client straight to moto for checking what S3 really holds. Shared
by the S3 fault tests and the S3 metadata tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from tests.e2e.conftest import TusServer, distributed_env
from tests.services_s3 import CREDENTIALS, REGION

from .s3proxy import S3FaultProxy


@dataclass
class Rig:
    server: TusServer
    proxy: S3FaultProxy
    bucket: str
    s3: Any  # a boto3 S3 client straight to moto (no faults)

    def durable(self, url: str) -> int:
        """The bytes S3 really holds for the upload at ``url``, derived the way the server
        rebuilds an offset: the parts numbered 1, 2, 3... without a gap, or a tail object
        that starts where one of them ends."""
        upload_id = url.rsplit("/", 1)[1]
        client = self.s3
        info_object = client.get_object(Bucket=self.bucket, Key=f"{upload_id}.info")
        multipart = json.loads(info_object["Body"].read())["storage"]["upload_id"]
        listed = client.list_parts(Bucket=self.bucket, Key=upload_id, UploadId=multipart)
        ends = [0]
        for part in sorted(listed.get("Parts", []), key=lambda p: p["PartNumber"]):
            if part["PartNumber"] != len(ends):
                break
            ends.append(ends[-1] + part["Size"])
        try:
            tail = client.get_object(Bucket=self.bucket, Key=f"{upload_id}.part")
        except client.exceptions.NoSuchKey:
            return ends[-1]
        start_at = int(tail["Metadata"].get("tus-tail-start", "-1"))
        size = len(tail["Body"].read())
        return start_at + size if start_at in ends else ends[-1]


@pytest.fixture
def rig(
    server_factory: Callable[..., TusServer], moto_s3_endpoint: str, redis_url: str
) -> Iterator[Rig]:
    proxy = S3FaultProxy(moto_s3_endpoint)
    proxy.start()
    try:
        env = distributed_env(proxy.url, redis_url)
        s3 = boto3.client("s3", endpoint_url=moto_s3_endpoint, region_name=REGION, **CREDENTIALS)
        yield Rig(server_factory(**env), proxy, env["TUS_S3_BUCKET"], s3)
    finally:
        proxy.stop()
