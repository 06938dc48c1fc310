"""Float64 references for the tests: slow, written from the definitions with numpy, sharing no code
with the fast paths (only the published coefficient tables, which are data)."""
