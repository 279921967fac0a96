"""Precision decided in the ONNX graph: FP16 casts and explicit INT8 Q/DQ, by a named rule.

The rule ("precision scopes"): each model declares, per precision, the top-level submodules whose
nodes may run in reduced precision (CRAD: frozen backbone and fusion blocks for INT8; also the
output conv for FP16). Every other node (coordinate nets, grid reads, blend, distance, smoothing,
score) stays FP32. Node scopes come from the exporter's node names (``/backbone/...``).
"""
