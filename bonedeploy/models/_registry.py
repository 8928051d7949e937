"""Model registry: the seed's variants by name, with their training defaults and seed results.

Modelled on torchvision's ``models/_api.py``: registering a name twice raises, lookups of an
unknown name list the valid choices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from bonedeploy.errors import BackendUnavailableError, ConfigError

SEED_INPUT = (1, 400, 400)
"""C x H x W of the seed's inputs: grey, centre-cropped to 400 x 400."""


@dataclass(frozen=True)
class TrainDefaults:
    """The seed's hyper-parameters for one run (optimiser Adam, CrossEntropyLoss)."""

    epochs: int
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    optimizer: str = "adam"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SeedResult:
    """What the seed study reported for this run (validation n=72)."""

    val_acc: float
    train_acc: float
    f1: float
    saved_epoch: int
    train_loss: float | None = None
    val_loss: float | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., Any] = field(repr=False)
    kwargs: dict[str, Any]
    defaults: TrainDefaults
    seed: SeedResult
    params: int
    description: str
    input_size: tuple[int, int, int] = SEED_INPUT

    def __post_init__(self) -> None:
        c, h, w = self.input_size
        if h != w or c not in (1, 3):
            raise ValueError(f"{self.name}: input_size {self.input_size} must be (1|3, S, S)")

    def preprocess(self) -> Any:
        """The ``PreprocessSpec`` that feeds this model (as torchvision's ``Weights.transforms``):
        training writes it into the checkpoint's card, and every artefact carries it from there."""
        from bonedeploy.data.preprocess import PreprocessSpec

        return PreprocessSpec(crop_size=self.input_size[1], channels=self.input_size[0])

    def hyperparameters(self) -> str:
        """The seed table's 'Hyper parameters' cell."""
        parts = [self.description]
        if "dropout" in self.kwargs:
            parts.append(f"dropout {self.kwargs['dropout']}")
        parts.append(f"λ={self.defaults.weight_decay:g}")
        parts.append(f"lr={self.defaults.lr:g}")
        return ", ".join(parts)


_MODELS: dict[str, ModelEntry] = {}
FAMILIES = ("vgg", "alexnet", "resnet")
"""The seed table's order; a family file may be imported first by anyone (``SELECTED``), so
listings sort by this, not by registration order. Other families (tests, plugins) come last."""


# Per family: the module whose output closes the last convolutional block (before the classifier
# head). Grad-CAM's default target and the out-of-distribution gate's features (pooled) both read it.
_LAST_CONV: dict[str, Callable[[Any], str]] = {}


def register_last_conv(family: str, pick: Callable[[Any], str]) -> None:
    """``pick(model) -> module name``; registering a family twice raises."""
    if family in _LAST_CONV:
        raise ValueError(f"family {family!r} already has a last-conv layer rule")
    _LAST_CONV[family] = pick


def last_conv_layer(family: str, model: Any) -> str:
    """The module name closing ``model``'s last convolutional block; ``ConfigError`` naming the
    families that have a rule when ``family`` has none."""
    _load_families()
    try:
        pick = _LAST_CONV[family]
    except KeyError as e:
        raise ConfigError(f"no last convolutional layer known for family {family!r} (families: "
                          f"{', '.join(_LAST_CONV)})") from e
    return pick(model)


def register_model(entry: ModelEntry) -> ModelEntry:
    if entry.name in _MODELS:
        raise ValueError(f"model {entry.name!r} is already registered")
    _MODELS[entry.name] = entry
    return entry


def list_models(family: str | None = None) -> list[str]:
    _load_families()
    rank = {f: i for i, f in enumerate(FAMILIES)}
    names = sorted(_MODELS, key=lambda n: rank.get(_MODELS[n].family, len(FAMILIES)))  # stable
    return [n for n in names if family is None or _MODELS[n].family == family]


def get_model_entry(name: str) -> ModelEntry:
    _load_families()
    try:
        return _MODELS[name]
    except KeyError as e:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(list_models())}") from e


def create_model(name: str, **overrides: Any):
    """Build an untrained ``nn.Module`` for ``name``; ``overrides`` replace registry kwargs."""
    entry = get_model_entry(name)
    kwargs = {**entry.kwargs, **overrides}
    unknown = set(overrides) - set(entry.kwargs) - {"num_classes", "in_channels"}
    if unknown:
        valid = sorted(set(entry.kwargs) | {"num_classes", "in_channels"})
        raise ConfigError(f"{name} does not take {sorted(unknown)}; valid options: {valid}")
    return entry.builder(**kwargs)


def _load_families() -> None:
    # Families register on import; importing here keeps `import bonedeploy` torch-free (each
    # family file defines its nn.Module classes at module level). Order: the seed table's.
    try:
        from bonedeploy.models import vgg, alexnet, resnet  # noqa: F401, I001
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        raise BackendUnavailableError("the model zoo needs PyTorch: pip install 'bonedeploy[train]' "
                                      "(inference on exported files does not)") from e
