"""gRPC transport: protobuf codec and thin server/site drivers around the sans-I/O sessions.

Layers, inside out: ``generated/`` (protoc output, never edited by hand; see
``regenerate``); ``messages`` (typed round-coordination messages: setup,
FedMAP announcement, decline, outcome); ``codec`` (the one mapping between
protobuf and the typed messages); ``framing`` (chunking of large messages);
``rpc`` (the ``Federation`` service binding); the drivers ``server``
(``AggregationServer``) and ``site`` (``SiteClient``); and deployment helpers
(``security``, ``pki``, ``keygen``, ``deploy_config``, ``state_store``).
Only this package imports grpc. DEPLOYMENT.md describes the wire protocol.
"""
