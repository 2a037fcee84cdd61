"""Generated from proto/credguard/v1/lsa.proto by generate_stubs.py: the public API."""
