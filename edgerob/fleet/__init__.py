"""The fleet: moving workloads to devices and results back (bundles, SSH, ingest)."""
