"""One site runtime and one server runtime, written once, driven by two transports.

- ``site.SiteRuntime``: what a site does in a round (its own privacy policy,
  ledger gate, DP-SGD or Adam training, score release, contribution, records).
- ``server.ServerRuntime``: what the server does in a run (initial state,
  layout and context per round, update from sums only, persistence, progress).
- ``channel``: the abstract channel between them; ``inprocess`` is the
  in-process transport, ``transport.server_channel`` / ``transport.site_driver``
  the gRPC one (``fedmap-secure server`` / ``site``, ``simulate --transport grpc``).
- ``privacy``: a site's policy, its plan for a run, its ledger and guard.
"""
