"""The engine as a service: the Engine protocol over a byte stream (docs/architecture.md)."""
