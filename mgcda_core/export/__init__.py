"""Deployment export: ONNX export with checks (``onnx_export``, ``onnx_checks``, ``parameters``), the TensorRT
engine builder (``tensorrt_builder``) and its verified engine cache (``engine_cache``).

CLI: ``python -m mgcda_core.export``; see docs/DEPLOYMENT.md.
"""
