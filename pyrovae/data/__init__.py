"""Data: named data sets found on disk or embedded, the batch dict, input checks.

A batch is a dict of named tensors (one datapoint per row) passed to the model and guide as
keyword arguments."""

from pyrovae.data.datasets import (
    DataFormatError, DataNotFoundError, DataSet, batches, list_datasets, load_dataset, register_dataset,
    search_paths,
)
from pyrovae.data.inputs import as_batch_dict, eval_split, resolve_dataset, to_device

__all__ = ["DataFormatError", "DataNotFoundError", "DataSet", "as_batch_dict", "batches", "eval_split",
           "list_datasets", "load_dataset", "register_dataset", "resolve_dataset", "search_paths", "to_device"]
