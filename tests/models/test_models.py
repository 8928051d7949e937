"""Generated from the registry (after timm's tests/test_models.py): every seed variant."""

import pytest
import torch

from bonedeploy.errors import ConfigError
from bonedeploy.models import create_model, get_model_entry, list_models, register_model

SEED_PARAMS = {
    "vgg8": 395_634,
    "vgg10": 7_638_210,
    "alexnet_d05": 147_395_970,
    "alexnet_d08": 147_395_970,
    "alexnet_d08_wd1e-4": 147_395_970,
    "alexnet_d08_wd1e-3": 147_395_970,
    "resnet26": 3_152_370,
    "resnet16": 213_234,
}

# Other tests may register a tiny model of family "test"; everything else must be a seed run.
MODELS = [m for m in list_models() if get_model_entry(m).family != "test"]


def test_registry_holds_exactly_the_seed_runs_in_table_order():
    assert MODELS == list(SEED_PARAMS)


@pytest.mark.parametrize("name", MODELS)
def test_param_count_matches_seed(name):
    model = create_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert n == SEED_PARAMS[name] == get_model_entry(name).params


@pytest.mark.parametrize("name", MODELS)
def test_forward_maps_batch_to_two_logits(name):
    torch.manual_seed(0)
    entry = get_model_entry(name)
    assert entry.input_size == (1, 400, 400)  # the seed's preprocessing for every run
    assert entry.preprocess().input_shape == entry.input_size
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *entry.input_size))
    assert out.shape == (2, 2)
    assert torch.isfinite(out).all()
    # logits, not log-probabilities: rows need not sum to 1 after exp (the seed's double softmax)
    assert not torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-3)


def test_alexnet_intermediate_shapes_match_seed_summary():
    model = create_model("alexnet_d08_wd1e-3").eval()
    expected = {
        0: (96, 98, 98), 2: (96, 48, 48), 3: (96, 48, 48), 4: (256, 48, 48), 6: (256, 23, 23),
        8: (384, 23, 23), 10: (384, 23, 23), 12: (256, 23, 23), 14: (256, 11, 11), 15: (30976,),
    }
    x = torch.zeros(1, 1, 400, 400)
    seen = {}
    with torch.no_grad():
        for i, layer in enumerate(model):
            x = layer(x)
            seen[i] = tuple(x.shape[1:])
    assert {i: seen[i] for i in expected} == expected


@pytest.mark.parametrize("name", MODELS)
def test_registry_entry_carries_seed_hyperparameters(name):
    e = get_model_entry(name)
    assert e.defaults.lr == 1e-4 and e.defaults.batch_size == 32
    assert 0.5 <= e.seed.val_acc <= 0.9


def test_seed_specific_hyperparameters():
    assert get_model_entry("alexnet_d08_wd1e-3").kwargs["dropout"] == 0.8
    assert get_model_entry("alexnet_d08_wd1e-3").defaults.weight_decay == 1e-3
    assert get_model_entry("resnet16").defaults.weight_decay == 1e-2
    assert get_model_entry("resnet16").defaults.epochs == 50
    assert get_model_entry("resnet26").defaults.epochs == 20


def test_dropout_override_reaches_the_layers():
    model = create_model("alexnet_d05", dropout=0.3)
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.3, 0.3]


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="valid models: vgg8"):
        create_model("alexnet")


def test_unknown_option_is_refused():
    with pytest.raises(ConfigError, match="valid options"):
        create_model("vgg8", dropout=0.5)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_model(get_model_entry("vgg8"))


@pytest.mark.parametrize("name", MODELS)
def test_model_classes_live_at_module_level(name):
    """Module-level classes pickle, show in reprs and can be subclassed (timm's layout)."""
    import importlib

    model = create_model(name)
    cls = type(model)
    assert importlib.import_module(cls.__module__).__dict__[cls.__qualname__] is cls
    for sub in model.modules():
        assert "<locals>" not in type(sub).__qualname__


def test_state_dict_keys_keep_the_flat_layer_indices():
    """Checkpoints written before the classes existed (nn.Sequential) still load."""
    keys = list(create_model("alexnet_d05").state_dict())
    assert keys[:2] == ["0.weight", "0.bias"] and keys[-1] == "22.bias"
    assert list(create_model("vgg8").state_dict())[:2] == ["0.weight", "0.bias"]


def test_model_zoo_without_torch_names_the_extra():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"  # what an edge install without torch sees
            "from bonedeploy.models import list_models\n"
            "try:\n    list_models()\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "BackendUnavailableError" in out and "bonedeploy[train]" in out


def test_listing_order_does_not_depend_on_which_family_was_imported_first():
    import subprocess
    import sys

    code = ("from bonedeploy.models.resnet import ResNet\nfrom bonedeploy.models.alexnet import SELECTED\n"
            "from bonedeploy.models import list_models\nprint(','.join(list_models()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.strip().split(",") == list(SEED_PARAMS)
