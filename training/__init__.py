"""Training for the two served models: data -> model -> fit -> evaluate -> export.

Run it with `python -m training --help`. Imports only `app.model_card` and `app.metrics`
from the service: the model card is the one contract between the two.
"""
