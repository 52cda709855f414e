"""Class-conditional node features: what a radiologist would describe, drawn per case.

Every feature is drawn from distributions that overlap between classes (no single cue decides a
case); the combination carries the signal, as in clinical practice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HILUM_KINDS = ("present", "eccentric", "absent")
VASCULAR_PATTERNS = ("hilar", "peripheral", "mixed", "displaced", "sparse", "none")


@dataclass(frozen=True)
class ClassPrior:
    """Distributions of one class's node features (means/sds, probabilities)."""

    long_axis_mm: tuple[float, float]  # mean, sd of the long axis
    axis_ratio: tuple[float, float]  # mean, sd of long/short axis (>= 1.05)
    hilum: tuple[float, float, float]  # P(present, eccentric, absent)
    cortex_db: tuple[float, float]  # cortex echo relative to fat (dB): mean, sd
    p_hyperechoic: float  # chance the cortex is hyperechoic instead
    heterogeneity: tuple[float, float]  # Beta(a, b) of internal echo heterogeneity
    p_reticulation: float
    p_necrosis: float
    p_calcification: float
    p_ill_defined: float
    p_edema: float
    p_matted: float  # fused neighbouring nodes
    vascular: tuple[float, float, float, float, float, float]  # P over VASCULAR_PATTERNS
    flow: tuple[float, float]  # mean, sd of flow intensity (1 = typical)


PRIORS: dict[str, ClassPrior] = {
    # Reactive: oval (L/S > 2), fatty hilum kept, tree-like hilar flow; a minority loses the hilum
    # or shows little flow, so a missing hilum alone never proves malignancy.
    "reactive": ClassPrior(
        long_axis_mm=(18.0, 5.0), axis_ratio=(1.85, 0.45), hilum=(0.72, 0.15, 0.13),
        cortex_db=(-6.0, 2.5), p_hyperechoic=0.04, heterogeneity=(2.5, 6.0),
        p_reticulation=0.15, p_necrosis=0.08, p_calcification=0.05, p_ill_defined=0.22,
        p_edema=0.15, p_matted=0.10, vascular=(0.60, 0.06, 0.12, 0.04, 0.11, 0.07),
        flow=(1.0, 0.3)),
    # Tuberculous: caseous necrosis, matted nodes with blurred margins and soft-tissue oedema;
    # vessels pushed aside by necrosis or scarce.
    "tuberculous": ClassPrior(
        long_axis_mm=(20.0, 5.5), axis_ratio=(1.6, 0.4), hilum=(0.12, 0.28, 0.60),
        cortex_db=(-7.0, 2.5), p_hyperechoic=0.05, heterogeneity=(3.5, 4.0),
        p_reticulation=0.08, p_necrosis=0.60, p_calcification=0.18, p_ill_defined=0.60,
        p_edema=0.45, p_matted=0.40, vascular=(0.07, 0.15, 0.07, 0.30, 0.24, 0.17),
        flow=(0.8, 0.3)),
    # Lymphoma: round, markedly hypoechoic ("pseudocystic") with a reticulated interior, rich
    # hilar + mixed flow; necrosis and calcification are rare before treatment.
    "lymphoma": ClassPrior(
        long_axis_mm=(22.0, 6.5), axis_ratio=(1.4, 0.32), hilum=(0.20, 0.25, 0.55),
        cortex_db=(-9.5, 3.0), p_hyperechoic=0.0, heterogeneity=(2.5, 5.0),
        p_reticulation=0.62, p_necrosis=0.07, p_calcification=0.03, p_ill_defined=0.15,
        p_edema=0.10, p_matted=0.22, vascular=(0.30, 0.08, 0.46, 0.04, 0.07, 0.05),
        flow=(1.2, 0.4)),
    # Metastatic: round, hilum lost, heterogeneous, cystic necrosis or (thyroid primaries) punctate
    # calcification; sharp margins until extranodal spread; capsular or chaotic flow.
    "metastatic": ClassPrior(
        long_axis_mm=(20.0, 6.0), axis_ratio=(1.4, 0.35), hilum=(0.08, 0.20, 0.72),
        cortex_db=(-6.5, 2.8), p_hyperechoic=0.12, heterogeneity=(4.0, 4.0),
        p_reticulation=0.08, p_necrosis=0.38, p_calcification=0.30, p_ill_defined=0.20,
        p_edema=0.12, p_matted=0.10, vascular=(0.06, 0.46, 0.24, 0.09, 0.09, 0.06),
        flow=(1.0, 0.35)),
}


@dataclass(frozen=True)
class NodeFeatures:
    """The drawn description of one case's index node."""

    label: str
    long_axis_mm: float
    axis_ratio: float
    tilt_deg: float  # long axis against the skin line
    irregularity: float  # amplitude of boundary lobulation (0.02 smooth .. 0.2 lobulated)
    cortex_db: float
    heterogeneity: float  # 0..1
    reticulation: float  # strength 0..1 (0: none)
    hilum: str  # HILUM_KINDS
    necrosis: int  # number of necrotic areas
    necrosis_size: float  # radius of each, fraction of the node's radii
    calcifications: int  # number of punctate echogenic foci
    coarse_calcification: bool  # larger foci with shadowing (healed tuberculosis)
    ill_defined: bool
    edema: float  # extent of the echogenic halo in mm (0: none)
    neighbours: int  # other nodes in view
    matted: bool  # neighbours fused with the index node
    vascular: str  # VASCULAR_PATTERNS
    flow: float  # flow intensity (speed and vessel count), 0.2..2.5


def sample_features(label: str, rng: np.random.Generator) -> NodeFeatures:
    """Draw one node's features from its class's prior."""
    prior = PRIORS[label]
    necrosis = int(rng.integers(1, 4)) if rng.random() < prior.p_necrosis else 0
    calcs = int(rng.integers(2, 10)) if rng.random() < prior.p_calcification else 0
    coarse = bool(calcs and label == "tuberculous" and rng.random() < 0.5)
    matted = bool(rng.random() < prior.p_matted)
    cortex = prior.cortex_db
    cortex_db = rng.normal(1.0, 1.5) if rng.random() < prior.p_hyperechoic else rng.normal(*cortex)
    ill = bool(rng.random() < prior.p_ill_defined)
    return NodeFeatures(
        label=label,
        long_axis_mm=float(np.clip(rng.normal(*prior.long_axis_mm), 12.0, 38.0)),
        axis_ratio=float(np.clip(rng.normal(*prior.axis_ratio), 1.05, 3.2)),
        tilt_deg=float(rng.normal(0.0, 9.0)),
        irregularity=float(rng.uniform(0.02, 0.06) + (rng.uniform(0.02, 0.08) if ill else 0.0)),
        cortex_db=float(np.clip(cortex_db, -16.0, 3.0)),
        heterogeneity=float(rng.beta(*prior.heterogeneity)),
        reticulation=float(rng.uniform(0.5, 1.0)) if rng.random() < prior.p_reticulation else 0.0,
        hilum=str(rng.choice(HILUM_KINDS, p=prior.hilum)),
        necrosis=necrosis,
        necrosis_size=float(rng.uniform(0.15, 0.38)),
        calcifications=min(calcs, 3) if coarse else calcs,  # healed foci are few and large
        coarse_calcification=coarse,
        ill_defined=ill,
        edema=float(rng.uniform(1.5, 4.5)) if rng.random() < prior.p_edema else 0.0,
        neighbours=int(rng.integers(1, 3)) if matted else int(rng.random() < 0.25),
        matted=matted,
        vascular=str(rng.choice(VASCULAR_PATTERNS, p=prior.vascular)),
        flow=float(np.clip(rng.normal(*prior.flow), 0.25, 2.5)),
    )


def feature_vector(f: NodeFeatures) -> np.ndarray:
    """Numeric encoding of the drawn features (what a radiologist's checklist would record)."""
    one_hot = [float(f.hilum == k) for k in HILUM_KINDS] + [float(f.vascular == k) for k in VASCULAR_PATTERNS]
    return np.array([f.long_axis_mm, f.axis_ratio, f.cortex_db, f.heterogeneity, f.reticulation,
                     float(f.necrosis > 0), float(f.calcifications > 0), float(f.ill_defined),
                     float(f.edema > 0), float(f.matted), f.flow, *one_hot], dtype=np.float64)
