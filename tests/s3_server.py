"""A real S3 API on 127.0.0.1 for the tests: moto's server mode, reached through s3fs.

``s3_endpoint`` (a session fixture in tests/conftest.py) starts ``ThreadedMotoServer`` on a
free port once; each test makes its own bucket with ``make_bucket``. Credentials are dummy
values given through ``storage_options`` (never the environment, so nothing else in the
session can pick them up).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

_BUCKETS = itertools.count()


@dataclass
class S3:
    endpoint: str

    @property
    def options(self) -> dict[str, Any]:
        """storage_options for s3fs (dummy keys: moto checks none unless auth is switched on)."""
        return {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing"}

    def fs(self, **extra: Any):
        import s3fs

        return s3fs.S3FileSystem(**(self.options | extra))

    def client(self, service: str = "s3", **extra: Any):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=extra.pop("key", "testing"),
            aws_secret_access_key=extra.pop("secret", "testing"),
        )

    def make_bucket(self, objects: dict[str, bytes] | None = None) -> str:
        """A new, empty bucket (its name) with ``objects`` (key -> bytes) put in it."""
        name = f"test-{next(_BUCKETS)}"
        client = self.client()
        client.create_bucket(Bucket=name)
        for key, body in (objects or {}).items():
            client.put_object(Bucket=name, Key=key, Body=body)
        return name

    def set_auth(self, enabled: bool) -> None:
        """Switch moto's IAM checks on (every request must be signed by a known, allowed key)
        or off, through its /moto-api/reset-auth endpoint."""
        import urllib.request

        body = b"0" if enabled else b"inf"
        req = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=body,
            headers={"Content-Type": "text/plain"},  # a form body would reach moto empty
        )
        urllib.request.urlopen(req, timeout=10).read()

    def user_allowed(self, bucket: str, prefix: str) -> dict[str, str]:
        """Dummy-free keys of a new IAM user who may list ``bucket`` and read only ``prefix``."""
        iam = self.client("iam")
        name = f"reader-{bucket}"
        iam.create_user(UserName=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket"],
                    "Resource": [f"arn:aws:s3:::{bucket}"],
                },
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
                },
            ],
        }
        iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
