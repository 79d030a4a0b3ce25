"""Protocol front-ends: thin adapters from other servers' wire formats to the data plane.

Each module speaks one protocol and translates it into the same two core calls,
`DataPlane.classify_pixels` (tensors) and `DataPlane.classify_uploads` (encoded
images), so every family shares the preprocessing, the micro-batcher and the errors:

- `tfserving`: TensorFlow Serving REST API (`/v1`).
- `v2`: Open Inference Protocol V2 REST (`/v2`), as KServe, Triton and MLServer speak it;
  `v2_binary` holds its binary tensor data extension.
- `inputs`: what the adapters share (body parsing, tensor shaping, base64 images).
"""
