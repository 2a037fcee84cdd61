"""The enclave protocol's messages (only `SealedLogonSecret` is used: the plaintext of a sealed secret)."""
