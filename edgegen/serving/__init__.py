"""Serving packages beyond one process: Triton Inference Server model repositories
(`edgegen triton`) and ONNX Runtime GenAI configs (docs/serving.md). Runtime code."""
