"""Generated from proto/credguard/enclave/v1/enclave.proto by generate_stubs.py (messages only)."""
