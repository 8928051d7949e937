"""Grad-CAM explanations: from a ``.pt`` (pytorch-grad-cam) or in-graph from ``model.explain.onnx``.

``bonedeploy.explain.run.explain`` is the library function behind ``bonedeploy explain`` and
``infer --explain``; the ONNX path imports onnxruntime only (an edge box has no torch).
"""
