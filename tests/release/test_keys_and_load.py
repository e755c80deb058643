"""Keys (mode, no overwrite, wrong kinds) and the consumer side: MONAI datasets and nnU-Net's own integrity check
on an exported package."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from synthrelease.errors import InputError
from synthrelease.release import InvalidPackage, export_package, generate_keypair, load, verify_package
from synthrelease.release.signing import load_private_key


def test_keygen_writes_a_private_key_only_the_owner_can_read_and_never_overwrites(tmp_path: Path) -> None:
    key, pub = generate_keypair(tmp_path / "k")
    assert pub == tmp_path / "k.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        generate_keypair(tmp_path / "k")
    assert key.read_bytes() == before


def test_a_public_key_is_not_a_private_key(tmp_path: Path) -> None:
    _, pub = generate_keypair(tmp_path / "k")
    with pytest.raises(InputError, match=r"not the \.pub file"):
        load_private_key(pub)
    with pytest.raises(InputError, match="PEM public key"):
        verify_package(tmp_path, key=tmp_path / "k")


@pytest.fixture(scope="module")
def package(release_ws, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    return export_package(release_ws.root, "good", tmp_path_factory.mktemp("load") / "synth", tar=True,
                          key=release_ws.key).path


def test_load_gives_monai_ready_items(package: Path) -> None:
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    items = load(package)
    assert [i["case_id"] for i in items] == ["syn0000", "syn0001", "syn0002"]
    assert items[0]["image"].endswith("imagesTr/syn0000_0000.nii.gz")  # one channel: a path, not a list
    ds = Dataset(items, Compose([LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"])]))
    sample = ds[1]
    assert tuple(sample["image"].shape) == (1, 16, 16, 16) and tuple(sample["label"].shape) == (1, 16, 16, 16)
    assert set(sample["label"].unique().tolist()) <= {0.0, 1.0, 2.0}


def test_multichannel_items_are_lists_that_monai_stacks_as_channels(package: Path, tmp_path: Path) -> None:
    """nnU-Net's _0000, _0001 files: MONAI's LoadImaged stacks a list of paths as channels."""
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    item = load(package)[0]
    two = {"image": [item["image"], item["image"]], "label": item["label"]}
    sample = Dataset([two], Compose([LoadImaged(keys=["image", "label"]),
                                     EnsureChannelFirstd(keys=["image", "label"])]))[0]
    assert tuple(sample["image"].shape) == (2, 16, 16, 16) and tuple(sample["label"].shape) == (1, 16, 16, 16)


def test_load_refuses_a_tampered_package_unless_told_not_to_verify(package: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(package, tmp_path / "copy"))
    (copy / "labelsTr" / "syn0001.nii.gz").write_bytes(b"")
    with pytest.raises(InvalidPackage, match="sha256 differs"):
        load(copy)
    assert len(load(copy, verify=False)) == 3


def test_load_a_tarball_extracts_it_safely_first(package: Path, release_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tarball = package.with_name("synth.tar.gz")
    with pytest.raises(InputError, match="extract_to"):
        load(tarball)
    items = load(tarball, key=release_ws.public_key, extract_to=tmp_path / "x")
    assert len(items) == 3 and items[2]["label"].startswith(str((tmp_path / "x" / "synth").resolve()))


def test_package_folder_is_an_nnunet_raw_dataset(package: Path, tmp_path: Path) -> None:
    """nnU-Net's own check (what --verify_dataset_integrity runs) accepts the folder as it is."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(package), num_processes=1)
