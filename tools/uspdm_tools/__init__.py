"""Host-side tools for uspdm: CLI, MicroPython runner, simulator, MCTP link, verifier."""
