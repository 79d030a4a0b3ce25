"""The contract between training and serving, framework-free (pydantic, NumPy, Pillow).

- `model_card`: what an exported version is and how to serve it.
- `classification`: the evaluation metrics both halves report.
- `drift`: the profile of a model's predictions (training records the test split's in
  the card) and the drift score the service compares its recent predictions with.
- `decision`: how probabilities become one label (argmax, or a two-class operating point).
- `runtimes`: when a LiteRT conversion may serve in the SavedModel's place (the check
  training's export and the service's load both run).
- `images`, `digits`, `preprocessing`: how an image file becomes a model's input; training
  reads its files and the service reads uploads through the same functions.

`training` imports nothing else of `app`, and nothing here imports the web framework,
TensorFlow or the rest of `app` (`lint-imports`, part of `make lint`, checks both).
"""
