"""Data: named data sets found on disk or embedded, the batch dict, input checks.

A batch is a dict of named tensors (one datapoint per row) passed to the model and guide as
keyword arguments. :func:`as_source` serves batches of tensors, Datasets or DataLoaders (held on the
device or streamed); :func:`load_data_path` reads a folder of images, an array file or
``module:function``."""

from pyrovae.data.datasets import (
    DataFormatError, DataNotFoundError, DataSet, batches, list_datasets, load_dataset, register_dataset,
    search_paths,
)
from pyrovae.data.inputs import as_batch_dict, eval_split, is_data_path, resolve_dataset, to_device
from pyrovae.data.sources import DataError, Source, as_source, epoch_order, head
from pyrovae.data.files import DataChangedError, UserData, load_data_path, verify
import pyrovae.data.sequences  # noqa: E402,F401  (registers ptb, debian-descriptions, bach-chorales)
import pyrovae.data.sets  # noqa: E402,F401  (registers synthetic-sets, digits-sets, mnist-sets)
import pyrovae.data.seq2seq  # noqa: E402,F401  (registers ptb-continue)
import pyrovae.data.digit_sequences  # noqa: E402,F401  (registers digit-sequences)
import pyrovae.data.indexed  # noqa: E402,F401  (registers digits-indexed, mnist-indexed)

__all__ = ["DataChangedError", "DataError", "DataFormatError", "DataNotFoundError", "DataSet", "Source", "UserData",
           "as_batch_dict", "as_source", "batches", "epoch_order", "eval_split", "head", "is_data_path", "list_datasets",
           "load_data_path",
           "load_dataset", "register_dataset", "resolve_dataset", "search_paths", "to_device", "verify"]
