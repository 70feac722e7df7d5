"""edgedepth.export: turn a trained coarse model + refiner into a bundle for the runtime.

Host-side only (torch, onnx, onnxruntime, openvino, nncf, coremltools; TensorRT on the device),
installed with ``pip install 'edgedepth[export]'``. The whole user story is
``edgedepth export CHECKPOINT --targets onnx,openvino,coreml --precision fp32,fp16,int8 --calib DATA``
(see :mod:`edgedepth.export.cli` and :func:`edgedepth.export.exporter.export_bundle`).

One module per step: ``onnx_export`` (ONNX + FP16), ``quantize_qdq`` (explicit INT8 Q/DQ for
TensorRT and ONNX Runtime), ``openvino_export`` (IR + NNCF), ``coreml_export`` (mlprogram +
compression), ``tensorrt`` / ``torch_tensorrt_export`` (device engines), ``pipeline`` (the fused
single-model pipeline), ``frames`` (calibration and held-out tiles), ``parity`` (accuracy report),
``bundle`` (atomic writer), ``exporter`` (orchestration).
"""
