"""gRPC transport: protobuf codec and thin server/site drivers around the sans-I/O sessions.

Layers: ``generated/`` (protoc output, never edited by hand; see ``regenerate``),
``codec`` (the one mapping between protobuf and the typed protocol messages),
``framing`` (chunking of large messages), and the drivers ``server``/``site``.
Only this package imports grpc.
"""
