"""The engine tests share the fixtures of tests/conftest.py; their helpers are in tests/engine/helpers.py."""
