"""The implementation of the public Python API (``fedmap_secure.__all__``); private."""
