"""The spectrogram U-Net: network (model.py), windowed inference (separator.py), training data
(data.py), training (train.py), ONNX export (export.py).

The operator that runs trained models is :mod:`sepops.operators.unet` (``get_operator("unet")``).
"""
