"""A site decodes its images once per version of its files, across the processes of a run."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import yaml

from common import dataset as dataset_module
from common import localiser as localiser_module
from common import site as site_module
from common import site_cache
from common import validation as validation_module
from common.labels import LEVELS
from tests.sitegen import write_site


@pytest.fixture
def site_yaml(tmp_path):
    manifest = write_site(tmp_path / "data", {"reactive": 3, "tuberculous": 2, "lymphoma": 2, "metastatic": 3})
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"name": "h1", "manifest": str(manifest), "output_dir": str(tmp_path / "out"),
                                    "holdout": {"kind": "fraction", "fraction": 0.3}, "validation_fraction": 0.2}))
    return path


def new_process(monkeypatch):
    """What a fresh ClientApp process has: nothing loaded in memory."""
    monkeypatch.setattr(site_module, "_LOADED", {})


def count_reads(monkeypatch) -> list:
    reads: list = []
    for module in (dataset_module, validation_module, localiser_module):
        real = module.read_image
        monkeypatch.setattr(module, "read_image", lambda path, *a, real=real: reads.append(path) or real(path, *a))
    return reads


def first_round(site_yaml, tiny_profile):
    site = site_module.load_site(site_yaml)
    datasets = [site.train_dataset(LEVELS[0], tiny_profile.data), site.validation_dataset(LEVELS[0], tiny_profile.data),
                site.localiser_dataset(tiny_profile.data)]
    for dataset in datasets:
        site.prepare(dataset)
    return site, datasets


def test_the_next_process_reads_no_image_and_gets_the_same_inputs(site_yaml, tiny_profile, monkeypatch):
    _, before = first_round(site_yaml, tiny_profile)
    new_process(monkeypatch)
    reads = count_reads(monkeypatch)
    site, after = first_round(site_yaml, tiny_profile)
    assert reads == []  # validated and decoded by the first process: read from the cache
    assert site.cache is not None and site.cache.parent == site.config.output_dir / site_cache.CACHE_DIR
    for old, new in zip(before, after):
        assert len(old) == len(new) > 0
        for index in range(len(old)):
            for a, b in zip(old[index], new[index]):
                assert np.array_equal(np.asarray(a), np.asarray(b))


def test_node_masks_are_cached_with_the_images(tmp_path, tiny_profile, monkeypatch):
    manifest = write_site(tmp_path / "data", {"reactive": 2, "tuberculous": 2, "lymphoma": 2, "metastatic": 2},
                          masks=True)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"name": "h1", "manifest": str(manifest), "output_dir": str(tmp_path / "out"),
                                    "validation_fraction": 0.0, "holdout": {"kind": "none"}}))

    def shared_round():
        site = site_module.load_site(path)
        dataset = site.train_dataset(None, tiny_profile.data, masks=True)
        site.prepare(dataset)
        return [dataset[i][3] for i in range(len(dataset))]

    before = shared_round()
    new_process(monkeypatch)
    reads: list = []
    real = dataset_module.read_mask
    monkeypatch.setattr(dataset_module, "read_mask", lambda case: reads.append(case) or real(case))
    after = shared_round()
    assert reads == [] and len(after) == 8
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(before, after))
    # A replaced mask is a new version of the site's files: decoded again.
    mask = next((manifest.parent / "images").glob("*_node.png"))
    os.utime(mask, ns=(mask.stat().st_mtime_ns, mask.stat().st_mtime_ns + 10 ** 9))
    new_process(monkeypatch)
    shared_round()
    assert len(reads) == 8


def test_the_cache_is_private_to_the_site(site_yaml, tiny_profile):
    site, _ = first_round(site_yaml, tiny_profile)
    root = site.config.output_dir / site_cache.CACHE_DIR
    folders = [root, site.cache]
    files = [p for p in site.cache.iterdir()]
    assert {p.name.split("-")[0] for p in files} == {"validated", "prepared", "localiser"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in folders)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_a_changed_image_invalidates_the_version_and_deletes_the_old_one(site_yaml, tiny_profile, monkeypatch):
    site, _ = first_round(site_yaml, tiny_profile)
    old_version = site.cache
    image = next((site.config.manifest.parent / "images").glob("*_cdfi.png"))
    mtime = image.stat().st_mtime_ns
    os.utime(image, ns=(mtime, mtime + 10 ** 9))  # the image was replaced
    new_process(monkeypatch)
    reads = count_reads(monkeypatch)
    site, _ = first_round(site_yaml, tiny_profile)
    assert site.cache != old_version and not old_version.exists()
    assert image in reads  # validated and decoded again


def test_a_validation_failure_is_never_remembered(site_yaml, monkeypatch):
    image = next((site_module.load_site_config(site_yaml).manifest.parent / "images").glob("*_bus.png"))
    image.write_bytes(b"not a png")
    new_process(monkeypatch)
    with pytest.raises(Exception, match=image.name):
        site_module.load_site(site_yaml)
    folder = next((site_module.load_site_config(site_yaml).output_dir / site_cache.CACHE_DIR).iterdir())
    assert not any(p.name.startswith("validated") for p in folder.iterdir())


def test_an_unreadable_cache_file_is_rebuilt(site_yaml, tiny_profile, monkeypatch):
    site, _ = first_round(site_yaml, tiny_profile)
    prepared = next(site.cache.glob("prepared-*.npz"))
    prepared.write_bytes(b"garbage")
    new_process(monkeypatch)
    reads = count_reads(monkeypatch)
    site, (train, validation, _) = first_round(site_yaml, tiny_profile)
    assert len(reads) == 2 * (len(train) + len(validation))  # crops again, no re-validation
    assert np.load(prepared, allow_pickle=False)["index"].size == 1  # rewritten, readable


def test_a_site_without_output_folder_rights_still_loads(site_yaml, tmp_path, monkeypatch):
    def refuse(*_args):
        raise PermissionError("read-only")

    monkeypatch.setattr(site_cache, "version_dir", refuse)
    site = site_module.load_site(site_yaml)
    assert site.cache is None and site.train_cases
