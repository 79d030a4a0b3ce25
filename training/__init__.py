"""Training for the served models: data -> model -> fit -> evaluate -> export.

Run it with `python -m training --help`. From the service it imports only `app.contract`,
the framework-free contract between the two halves: the model card, the classification
metrics and the preprocessing that turns image files into model input.
"""
