"""Pairing a study's B-mode and CDFI images into nodes.

Rules (`clafed ingest --pair-by`):
- `order` (default): in acquisition order (series number, instance number, acquisition time), the
  k-th B-mode image and the k-th CDFI image are node k. A study with one of each is one node; a
  study whose B-mode and CDFI counts differ is refused, since which images belong together
  cannot be told.
- `series`: every series holds one node, exactly one B-mode and one CDFI image; nodes are
  numbered in series order.
"""
from __future__ import annotations

from client.ingest.images import BMODE, CDFI, ReadyImage

PAIR_RULES = ("order", "series")


def pair_study(images: list[ReadyImage], rule: str) -> list[tuple[int, ReadyImage, ReadyImage]]:
    """[(node number from 1, B-mode image, CDFI image)]; ValueError says why the study cannot be paired."""
    if rule not in PAIR_RULES:
        raise ValueError(f"unknown pairing rule {rule!r}; choose one of {', '.join(PAIR_RULES)}")
    if rule == "order":
        return _pairs(sorted(images, key=lambda i: i.instance.order), "the study")
    series: dict[str, list[ReadyImage]] = {}
    for image in sorted(images, key=lambda i: i.instance.order):
        series.setdefault(image.instance.series_uid, []).append(image)
    out = []
    for node, members in enumerate(series.values(), start=1):
        number = members[0].instance.series_number
        (_, bmode, cdfi), *more = _pairs(members, f"series {number}")
        if more:
            raise ValueError(f"series {number} holds {len(more) + 1} B-mode/CDFI pairs; --pair-by series needs one")
        out.append((node, bmode, cdfi))
    return out


def _pairs(ordered: list[ReadyImage], where: str) -> list[tuple[int, ReadyImage, ReadyImage]]:
    bmodes = [i for i in ordered if i.kind == BMODE]
    cdfis = [i for i in ordered if i.kind == CDFI]
    if not bmodes or not cdfis or len(bmodes) != len(cdfis):
        raise ValueError(f"{where} has {_count(len(bmodes), 'B-mode')} and {_count(len(cdfis), 'CDFI')} "
                         "image(s): each node needs one of each (see --pair-by)")
    return [(k, b, c) for k, (b, c) in enumerate(zip(bmodes, cdfis), start=1)]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n else f"no {what}"
