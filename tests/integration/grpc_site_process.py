"""A site as its own OS process, SIGKILLed just before it sends a chosen message.

    python -m tests.integration.grpc_site_process PORT SITE STAGE

Identities come from ``grpc_harness.seeded_consortium`` (test-only fixed seed),
so the test process and this one agree on the roster without files.
"""

from __future__ import annotations

import os
import signal
import sys

import grpc

from fedmap_secure.transport.codec import SiteWireMessage
from tests.integration.grpc_harness import exact_inputs, harness_client, seeded_consortium


def main(port: int, site: str, stage: str) -> None:
    consortium = seeded_consortium()

    def die(message: SiteWireMessage) -> None:
        if type(message).__name__ == stage:
            os.kill(os.getpid(), signal.SIGKILL)

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = harness_client(
        consortium,
        site,
        channel,
        on_send=die,
    )
    value = exact_inputs()[site]
    client.run_round(lambda _setup: value)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
