"""Image folders and the split manifest."""

import json
from pathlib import Path

import pytest
from imagekit import png

from bonedeploy.data.folders import FolderScan, list_images, scan_image_folder
from bonedeploy.data.split import SPLIT_FORMAT, SplitManifest, make_split, split_from_folders
from bonedeploy.errors import ConfigError, DataError
from bonedeploy.data.preprocess import PreprocessSpec

SPEC = PreprocessSpec(crop_size=16)




def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "Train"
    png(root / "Normal" / "n1.png", 1)
    png(root / "Normal" / "sub" / "deeper" / "n2.PNG", 2)  # recursive, suffix case-insensitive
    png(root / "Fractured" / "f1.png", 3)
    png(root / "Fractured" / "f2.jpg", 4)
    touch(root / "Fractured" / "notes.txt")  # non-image suffix
    touch(root / "Fractured" / ".DS_Store")  # hidden file
    png(root / "Normal" / ".thumbs" / "t.png")  # hidden folder
    touch(root / "README.md")  # outside class folders
    png(root / ".cache" / "c.png")  # hidden top-level folder
    return root


# ---------------------------------------------------------------- scanning


def test_scan_classes_items_and_skip_counts(tree):
    scan = scan_image_folder(tree)
    assert isinstance(scan, FolderScan) and scan.root == tree
    assert scan.classes == ("Fractured", "Normal")  # sorted, as ImageFolder
    assert scan.items == [(Path("Fractured/f1.png"), 0), (Path("Fractured/f2.jpg"), 0),
                          (Path("Normal/n1.png"), 1), (Path("Normal/sub/deeper/n2.PNG"), 1)]
    assert scan.skipped == {"hidden": 3, "not an image file (suffix)": 1,
                            "outside class folders": 1}
    assert scan.counts() == {"Fractured": 2, "Normal": 2}
    assert "skipped" in scan.describe() and "4 images" in scan.describe()


def test_scan_can_restrict_classes(tree):
    png(tree / "test" / "u1.png")  # an unlabelled folder beside the classes
    assert scan_image_folder(tree).classes == ("Fractured", "Normal", "test")
    scan = scan_image_folder(tree, classes=["Normal", "Fractured"])
    assert scan.classes == ("Fractured", "Normal")
    assert scan.skipped["folder not in the requested classes"] == 1
    with pytest.raises(DataError, match="Broken"):
        scan_image_folder(tree, classes=["Fractured", "Broken"])


@pytest.mark.parametrize("case, message", [
    ("missing", "dataset folder not found"),
    ("no_classes", "no class folders"),
    ("empty_class", "has no images"),
    ("single", "only one class folder"),
])
def test_scan_errors_are_one_line_and_name_the_folder(tmp_path, case, message):
    root = tmp_path / "data"
    if case == "no_classes":
        png(root / "loose.png")
    elif case == "empty_class":
        png(root / "Normal" / "a.png")
        touch(root / "Fractured" / "only.txt")
    elif case == "single":
        png(root / "Normal" / "a.png")
    with pytest.raises(DataError, match=message) as info:
        scan_image_folder(root)
    assert str(root) in str(info.value) and "\n" not in str(info.value)


def test_list_images_files_and_folders(tree, tmp_path):
    odd = touch(tmp_path / "explicit.txt")  # named explicitly: kept, infer reports it as an error
    paths, skipped = list_images([tree / "Normal", odd, tree / "Fractured" / "f1.png", tree])
    assert paths == sorted(paths, key=lambda p: p.as_posix())
    assert odd in paths and len(paths) == len(set(paths)) == 5  # the tree's 4 + explicit.txt
    assert not any(".thumbs" in p.parts or ".cache" in p.parts for p in paths)
    assert skipped == 1 + 5  # Normal/.thumbs, then the tree: 3 hidden, txt, README.md
    assert list_images(tree / "Normal") == ([tree / "Normal/n1.png",
                                             tree / "Normal/sub/deeper/n2.PNG"], 1)
    with pytest.raises(DataError, match="input not found"):
        list_images([tmp_path / "nope"])


# ---------------------------------------------------------------- split


def seed_sized_scan(root: Path) -> FolderScan:
    """176 Fractured + 177 Normal distinct files (content is irrelevant to the split)."""
    items = []
    for label, (name, n) in enumerate([("Fractured", 176), ("Normal", 177)]):
        for i in range(n):
            touch(root / name / f"{name[0]}{i:03d}.png", f"{name}{i}")
            items.append((Path(name) / f"{name[0]}{i:03d}.png", label))
    return FolderScan(root, ("Fractured", "Normal"), items, {})


def test_split_reproduces_the_seed_arithmetic(tmp_path):
    split = make_split(seed_sized_scan(tmp_path / "d"), val_fraction=0.2, seed=0)
    assert split.counts() == {"train": {"Fractured": 140, "Normal": 141},
                              "val": {"Fractured": 36, "Normal": 36}}
    assert len(split.train) == 281 and len(split.val) == 72


def test_split_is_deterministic_stratified_and_seeded(tmp_path):
    scan = seed_sized_scan(tmp_path / "d")
    a, b = make_split(scan, seed=3), make_split(scan, seed=3)
    assert a.to_dict() == b.to_dict()
    other = make_split(scan, seed=4)
    assert {e["path"] for e in other.val} != {e["path"] for e in a.val}
    assert not {e["path"] for e in a.val} & {e["path"] for e in a.train}
    assert all(e["path"].startswith(("Fractured/", "Normal/")) for e in a.val)
    # adding a Normal image never reshuffles the Fractured validation images
    touch(scan.root / "Normal" / "extra.png", "extra")
    grown = FolderScan(scan.root, scan.classes, [*scan.items, (Path("Normal/extra.png"), 1)], {})
    fract = lambda s: {e["path"] for e in s.val if e["label"] == 0}  # noqa: E731
    assert fract(make_split(grown, seed=3)) == fract(a)


def test_split_refuses_bad_fraction_and_tiny_class(tmp_path):
    scan = seed_sized_scan(tmp_path / "d")
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ConfigError, match="val_fraction"):
            make_split(scan, val_fraction=bad)
    tiny = FolderScan(scan.root, scan.classes, [scan.items[0], scan.items[-1], scan.items[-2]], {})
    with pytest.raises(DataError, match="'Fractured'.*1 image"):
        make_split(tiny)


def test_manifest_round_trip_and_verify(tmp_path):
    root = tmp_path / "d"
    split = make_split(seed_sized_scan(root), seed=1)
    assert split.root == str(root.resolve()) and Path(split.root).is_absolute()
    path = tmp_path / "out" / "split.json"
    split.write(path)
    data = json.loads(path.read_text())
    assert data["format"] == SPLIT_FORMAT and data["seed"] == 1 and data["val_fraction"] == 0.2
    assert set(data["val"][0]) == {"path", "label", "sha256"}
    assert not [p for p in path.parent.iterdir() if p.name != "split.json"]  # no temp left over
    again = SplitManifest.read(path)
    assert again == split and SplitManifest.from_dict(split.to_dict()) == split
    assert again.verify() == []
    changed = root / split.val[0]["path"]
    changed.write_text("edited")
    (root / split.train[0]["path"]).unlink()
    problems = again.verify()
    assert len(problems) == 2
    assert any("changed" in p and str(changed) in p for p in problems)
    assert any(p.startswith("missing") for p in problems)
    with pytest.raises(DataError, match="2 problems"):
        again.ensure_matches()
    assert again.verify(tmp_path / "moved") == [f"data folder not found: {tmp_path / 'moved'}"]


def test_manifest_refuses_foreign_json(tmp_path):
    with pytest.raises(DataError, match="not a split manifest"):
        SplitManifest.from_dict({"format": "something/1"})
    with pytest.raises(DataError, match="not found"):
        SplitManifest.read(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="cannot read split manifest"):
        SplitManifest.read(tmp_path / "bad.json")


def test_split_from_folders(tmp_path):
    for part, n in (("Train", 3), ("Val", 1)):
        for cls in ("Fractured", "Normal"):
            for i in range(n):
                png(tmp_path / part / cls / f"{i}.png", i)
    split = split_from_folders(tmp_path / "Train", tmp_path / "Val")
    assert split.root == str(tmp_path) and split.seed is None and split.val_fraction is None
    assert split.counts() == {"train": {"Fractured": 3, "Normal": 3},
                              "val": {"Fractured": 1, "Normal": 1}}
    assert split.val[0]["path"] == "Val/Fractured/0.png" and split.verify() == []
    png(tmp_path / "Val" / "Other" / "x.png")
    with pytest.raises(DataError, match="class folders differ") as info:
        split_from_folders(tmp_path / "Train", tmp_path / "Val")
    assert "'Other'" in str(info.value) and str(tmp_path / "Train") in str(info.value)
