"""The host: the workstation that trains, exports, crafts attacks and prepares workloads.

Needs the `host` extra (torch, onnx, torchattacks, ...). May use the device layer (the
onnxruntime runtime checks an export, a power profiler meters training); the device never
imports the host.
"""
