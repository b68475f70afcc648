"""Test doubles that are real: small servers on 127.0.0.1 that the tests and benchmarks talk to."""
