"""Datasets: the built-in one (scikit-learn's digits), ImageFolder directories and .npz files."""
from __future__ import annotations


class DataError(ValueError):
    """A dataset could not be read or does not fit the model; the message is one line for the user."""
