"""Progress bars (tqdm) that cost nothing when switched off."""

from __future__ import annotations


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def progress_bar(enabled: bool, **kwargs):
    """A tqdm bar when ``enabled``, else a stand-in whose methods do nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, **kwargs)
