"""Class names, their fixed order, and how the three hierarchy levels split them."""
from __future__ import annotations

from dataclasses import dataclass

from common.errors import ProtocolError

# The fixed output order of CLA-HDM; every probability vector and report uses it.
CLASSES: tuple[str, ...] = ("reactive", "tuberculous", "lymphoma", "metastatic")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
BENIGN: frozenset[str] = frozenset({"reactive", "tuberculous"})
MALIGNANT: frozenset[str] = frozenset({"lymphoma", "metastatic"})


@dataclass(frozen=True)
class Level:
    """One sub-model's binary task: which labels it sees and how it names them.

    Index 1 is the positive class, matching how the paper reports sensitivity
    (malignant, tuberculous and metastatic are the positives of levels 1, 2, 3).
    """

    key: str
    title: str
    negative: tuple[str, ...]
    positive: tuple[str, ...]
    names: tuple[str, str]

    @property
    def labels(self) -> tuple[str, ...]:
        """Every 4-class label this level is trained and evaluated on."""
        return self.negative + self.positive

    def target(self, label: str) -> int:
        """The binary target (0 or 1) of a 4-class label that belongs to this level."""
        if label in self.positive:
            return 1
        if label in self.negative:
            return 0
        raise ValueError(f"label {label!r} does not belong to {self.key} ({self.title})")


LEVELS: tuple[Level, ...] = (
    Level("submodel1", "benign vs malignant", ("reactive", "tuberculous"), ("lymphoma", "metastatic"),
          ("benign", "malignant")),
    Level("submodel2", "reactive vs tuberculous", ("reactive",), ("tuberculous",),
          ("reactive", "tuberculous")),
    Level("submodel3", "lymphoma vs metastatic", ("lymphoma",), ("metastatic",),
          ("lymphoma", "metastatic")),
)
LEVEL_BY_KEY: dict[str, Level] = {level.key: level for level in LEVELS}
# The level whose P(malignant) routes a case to sub-model 2 or 3.
GATE_PHASE = LEVELS[0].key

# The shared first phase of a run: one network with 4-class heads over every labelled case, whose
# extractors then initialise the three sub-models (each sees only part of the cases on its own).
SHARED = "shared"
# The last phase: the node localiser (common/localiser.py), trained on the sites' ROIs, which
# proposes the box where a case has none.
LOCALISER = "localiser"
# Training phases in the order a run federates them.
PHASES: tuple[str, ...] = (SHARED,) + tuple(LEVEL_BY_KEY) + (LOCALISER,)


def phase_level(phase: str) -> Level | None:
    """The level a classifier phase trains (None: the shared phase, all four classes); the
    localiser's phase and unknown phases are refused (they have no level)."""
    if phase == SHARED:
        return None
    if phase not in LEVEL_BY_KEY:
        raise ProtocolError(f"unknown classifier phase {phase!r}: expected {SHARED} or one of "
                            f"{', '.join(LEVEL_BY_KEY)}")
    return LEVEL_BY_KEY[phase]


def check_phase(phase: str) -> str:
    """`phase` when it is one of PHASES; a ProtocolError naming them otherwise."""
    if phase not in PHASES:
        raise ProtocolError(f"unknown training phase {phase!r}: expected one of {', '.join(PHASES)}")
    return phase


def check_label(label: str) -> str:
    """Return `label` normalised to lower case, or raise naming the allowed values."""
    norm = label.strip().lower()
    if norm not in CLASS_INDEX:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(CLASSES)}")
    return norm
