"""A default that changed does not change a saved run: an option that run.json does not name
and whose field declares ``saved_default`` (the default before) is rebuilt with that value by
``load_run`` and by ``pyrovae fit --resume``'s defaults (``registry.saved_options``)."""

import json

import pyro
import torch

from pyrovae import fit
from pyrovae.cli.fit import defaults_from_saved
from pyrovae.guides import FullCovNormalGuide
from pyrovae.models import VAE
from pyrovae.registry import get_guide, saved_options
from pyrovae.training.run_folder import load_run


def test_saved_options_fill_only_what_the_run_did_not_name():
    factory = get_guide("fullcov")
    today = FullCovNormalGuide(6, 3, (8,)).options
    assert (today.parametrization, today.offdiag_scale) == ("relative", 0.1)
    assert saved_options(factory, {"z_dim": 3}) == {"z_dim": 3, "parametrization": "cholesky", "offdiag_scale": 1.0}
    assert saved_options(factory, {"parametrization": "relative", "offdiag_scale": 0.1}) == {
        "parametrization": "relative", "offdiag_scale": 0.1}
    assert saved_options(get_guide("diag"), {"z_dim": 3}) == {"z_dim": 3}  # no saved_default declared


def test_a_run_saved_before_the_default_changed_loads_and_resumes_as_trained(tmp_path):
    x = torch.bernoulli(torch.full((40, 6), 0.4), generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(0)
    model, guide = VAE(6, 3, (8,)), FullCovNormalGuide(6, 3, (8,), parametrization="cholesky", offdiag_scale=1.0)
    fit(model, guide, x, epochs=1, batch_size=20, lr=1e-1, progress=False, figures=False, out_dir=tmp_path / "run")
    assert torch.tril(guide.encode(x).scale_tril, -1).abs().max() > 0  # trained off the diagonal
    run_file = tmp_path / "run" / "run.json"
    saved = json.loads(run_file.read_text())
    del saved["guide"]["options"]["parametrization"]  # as the code before the options wrote it
    del saved["guide"]["options"]["offdiag_scale"]
    run_file.write_text(json.dumps(saved))

    loaded = load_run(tmp_path / "run").guide
    assert (loaded.options.parametrization, loaded.options.offdiag_scale) == ("cholesky", 1.0)
    torch.testing.assert_close(loaded.encode(x).scale_tril, guide.encode(x).scale_tril)
    defaults = defaults_from_saved(saved, "elbo")
    assert (defaults["opt_parametrization"], defaults["opt_offdiag_scale"]) == ("cholesky", 1.0)
