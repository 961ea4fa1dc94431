"""Inference core: config, network, preprocessing, sliding-window ensemble, Predictor."""
