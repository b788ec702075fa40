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
from fedmap_secure.transport.site import SiteClient
from tests.integration.grpc_harness import CONFIG, exact_inputs, seeded_consortium


def main(port: int, site: str, stage: str) -> None:
    consortium = seeded_consortium()

    def die(message: SiteWireMessage) -> None:
        if type(message).__name__ == stage:
            os.kill(os.getpid(), signal.SIGKILL)

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = SiteClient(
        channel=channel,
        site_id=site,
        identity=consortium.identities[site],
        roster=consortium.roster,
        config=CONFIG,
        round_timeout=30.0,
        on_send=die,
    )
    value = exact_inputs()[site]
    client.run_round(lambda _setup: value)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
