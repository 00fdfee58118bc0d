"""The runtime: run a trained or exported mtlkd model on images, with any backend, without torch.

    from mtlkd.runtime import Predictor
    predictor = Predictor.load("exports/model.onnx")      # .safetensors, .onnx, .xml, .engine
    result = predictor.predict(rgb_image)                  # {"seg": H x W, "depth": H x W, "normal": H x W x 3}

Only the torch backend (a .safetensors checkpoint) imports torch; running an exported file needs numpy,
OpenCV, Pillow and the engine (onnxruntime, openvino or tensorrt).
"""

from mtlkd.errors import BackendError, BackendUnavailable
from mtlkd.runtime.predictor import Predictor

__all__ = ["BackendError", "BackendUnavailable", "Predictor"]
