"""The naive baseline: the textbook Keras service, `model.predict` once per request.

It loads `model.keras` with Keras and, for each upload, decodes the PNG to 28x28
grayscale and calls `model.predict` on the event loop, as tutorials write it. No
batching, no signature call: the figure the service is compared against.

    python -m bench.naive_app --port 8002 --model models/mnist-mlp/1/model.keras
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image


def create_app(model_path: Path) -> FastAPI:
    import keras

    model = keras.models.load_model(model_path)
    app = FastAPI(title="bench naive")

    @app.post("/predict")
    async def predict(file: Annotated[UploadFile, File(alias="files")]) -> dict[str, Any]:
        image = Image.open(io.BytesIO(await file.read())).convert("L").resize((28, 28))
        pixels = np.asarray(image, dtype=np.float32).reshape(1, 28, 28, 1)
        probabilities = model.predict(pixels, verbose=0)[0]
        label = int(np.argmax(probabilities))
        return {"label": label, "confidence": float(probabilities[label])}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--model", type=Path, default=Path("models/mnist-mlp/1/model.keras"))
    args = parser.parse_args()
    uvicorn.run(create_app(args.model), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
