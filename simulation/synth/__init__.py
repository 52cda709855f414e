"""Synthetic three-hospital dual-modality (BUS + CDFI) lymph-node ultrasound data.

`generate(preset, seed, out_dir)` writes `out_dir/<site>/manifest.csv` with images and masks;
`cohort_plan` gives the case list without rendering; `render_case` draws one case in memory.
"""
from simulation.synth.cohort import PAPER, PRESETS, SMALL, CasePlan, CohortSpec, Preset, cohort_plan
from simulation.synth.render import RenderedCase, render_case
from simulation.synth.writer import MANIFEST_COLUMNS, generate

__all__ = ["PAPER", "PRESETS", "SMALL", "CasePlan", "CohortSpec", "MANIFEST_COLUMNS", "Preset", "RenderedCase",
           "cohort_plan", "generate", "render_case"]
