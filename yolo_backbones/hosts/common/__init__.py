"""Host-independent pieces of the adapters: YAML row checks, function patching, offline defaults."""
