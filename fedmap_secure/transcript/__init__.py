"""Verifiable round transcripts for SecAgg+ (sans-I/O except ``store``).

``records`` (the data and its canonical form), ``message_hash`` (canonical
digests of typed messages), ``binding`` (context and aggregate digests),
``recorder`` (the server records each round; ``RecordingServerSession``,
``TranscriptChain``), ``site_record`` (each site's own record and
``cross_check``), ``verify`` (offline verification against the roster),
``aggregator`` (``RecordingSecureAggregator``, the in-process driver) and
``store`` (JSON files and ``verify_transcript_cli``). See
threat_model/THREAT_MODEL.md for what a transcript does and does not prove.
"""

from fedmap_secure.transcript.recorder import RecordingServerSession, TranscriptChain
from fedmap_secure.transcript.records import RoundTranscript
from fedmap_secure.transcript.site_record import SiteRecord, cross_check
from fedmap_secure.transcript.verify import verify_chain, verify_round

__all__ = [
    "RecordingServerSession",
    "RoundTranscript",
    "SiteRecord",
    "TranscriptChain",
    "cross_check",
    "verify_chain",
    "verify_round",
]
