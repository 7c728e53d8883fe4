"""kuamo: ONNX-optimised cross-modal product search."""

__version__ = "0.1.0"
