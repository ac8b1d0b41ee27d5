"""The device: what runs on a Jetson or GPU box. It loads artifacts, runs them on a runtime,
reads a power sensor and writes rows to the store.

Imports numpy, the runtime's library and the sensor's library only (no torch, onnx, scipy,
pandas, ...), and nothing from the host, catalog, fleet, analysis or CLI: whatever it runs comes
in as a prepared workload (tests/test_architecture.py and `lint-imports` check both).
"""
