"""Synthetic radiographs: config validation, rendering facts, the written dataset and the CLI.

Most tests render small images (256-300 px; the 400 crop then pads) to stay fast; the size
distribution itself is tested on the sampler, and one dataset uses the default sizes.
"""

import json

import numpy as np
import pytest

from bonedeploy.ui.progress import Progress
from PIL import Image

from bonedeploy.cli.app import main
from bonedeploy.errors import ConfigError
from bonedeploy.data.synth import (DIFFICULTIES, SynthConfig, generate_dataset, image_rng,
                              read_answers, render_case, render_radiograph)
from bonedeploy.data.synth.contact_sheet import save_contact_sheet
from bonedeploy.data.synth.dataset import plan_jobs
from bonedeploy.data.synth.render import sample_size

SMALL = dict(min_size=256, max_size=300)


def files(root, pattern="*"):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(pattern) if p.is_file())


# --- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    (dict(difficulty="brutal"), "easy, medium, hard"),
    (dict(image_format="gif"), "png, jpeg"),
    (dict(bit_depth=12), "8, 16"),
    (dict(bit_depth=16, image_format="jpeg"), "grayscale PNG only"),
    (dict(bit_depth=16, rgb=True), "grayscale PNG only"),
    (dict(n=-1), "n must be"),
    (dict(n=0, test_n=0), "nothing to generate"),
    (dict(fractured_fraction=1.5), "fractured_fraction"),
    (dict(min_size=500, max_size=400), "min_size"),
    (dict(min_size=100, max_size=200), "min_size"),
    (dict(seed=-3), "seed"),
])
def test_bad_config_is_a_config_error_naming_the_choices(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        SynthConfig(**kwargs)


def test_config_round_trips_and_accepts_jpg_alias():
    cfg = SynthConfig(n=3, seed=7, difficulty="hard", image_format="JPG", rgb=True)
    assert cfg.image_format == "jpeg" and cfg.suffix == ".jpg"
    assert SynthConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown synth config keys"):
        SynthConfig.from_dict({"n": 1, "colour": "blue"})
    assert SynthConfig().difficulty == "easy"


# --- rendering ------------------------------------------------------------------------------

def test_render_is_a_float_radiograph_with_dark_background_and_bright_bone():
    cfg = SynthConfig(n=1)
    img = render_radiograph(image_rng(0, 0), False, cfg)
    assert img.dtype == np.float32 and img.ndim == 2
    assert 380 <= min(img.shape) and max(img.shape) <= 640
    assert 0.0 <= img.min() and img.max() <= 1.0
    # A radiograph is mostly dark air with a grey arm and a small share of bright bone.
    assert np.percentile(img, 10) < 0.15 and np.percentile(img, 99) > 0.6
    assert np.array_equal(img, render_radiograph(image_rng(0, 0), False, cfg))
    assert not np.array_equal(img, render_radiograph(image_rng(1, 0), False, cfg))


def test_sizes_stay_in_range_and_both_crop_and_pad():
    cfg = SynthConfig(n=1)
    rng = np.random.default_rng(0)
    sides = np.array([sample_size(rng, cfg) for _ in range(300)])
    assert sides.min() >= 380 and sides.max() <= 640
    assert (sides.min(axis=1) < 400).sum() > 10  # the crop pads these
    assert (sides.min(axis=1) > 400).sum() > 150  # and crops these


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
@pytest.mark.parametrize("side", [256, 380, 640])
def test_break_lies_inside_the_centre_crop(difficulty, side):
    cfg = SynthConfig(n=1, difficulty=difficulty, min_size=side, max_size=side)
    for i in range(2):
        img, info = render_case(image_rng(11, i), True, cfg)
        assert info.fractured and info.bone in {"humerus", "ulna", "radius"}
        x0, y0, x1, y1 = info.break_box_crop
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 400, info
        if side >= 400:  # crop coordinates = image coordinates shifted by the crop start
            assert info.break_box_crop[0] == pytest.approx(info.break_box[0] - (side - 400) / 2, abs=1)


def test_only_the_break_differs_between_labels_and_it_is_lucent():
    """Same image seed, both labels: everything but the broken bone is identical."""
    for difficulty in ("easy", "hard"):
        cfg = SynthConfig(n=1, difficulty=difficulty, **SMALL)
        fx, info = render_case(image_rng(5, 2), True, cfg)
        nm, info_n = render_case(image_rng(5, 2), False, cfg)
        assert info_n.bone is None and info_n.break_box is None
        assert (info.height, info.width, info.marker) == (info_n.height, info_n.width, info_n.marker)
        diff = fx - nm
        cx, cy = (int(round(v)) for v in info.break_center)
        window = diff[cy - 3:cy + 4, cx - 3:cx + 4]  # bone removed at the break
        assert window.mean() < -0.2 if difficulty == "easy" else window.min() < -0.02


def test_an_undisplaced_crack_changes_only_pixels_near_its_reported_box():
    cfg = SynthConfig(n=1, difficulty="hard", **SMALL)
    for i in range(20):
        fx, info = render_case(image_rng(6, i), True, cfg)
        if info.displacement_px == 0:  # incomplete: nothing moved
            break
    else:
        pytest.fail("no incomplete hard break in 20 images")
    nm, _ = render_case(image_rng(6, i), False, cfg)
    ys, xs = np.nonzero(np.abs(fx - nm) > 0.02)
    bx0, by0, bx1, by1 = info.break_box
    pad = 3 * info.scale_px  # blur, unsharp mask and swelling spread the change a little
    assert len(xs) > 0
    assert xs.min() >= bx0 - pad and xs.max() <= bx1 + pad
    assert ys.min() >= by0 - pad and ys.max() <= by1 + pad


def test_easy_breaks_are_wider_and_more_displaced_than_hard_ones():
    def stats(difficulty):
        cfg = SynthConfig(n=1, difficulty=difficulty, **SMALL)
        infos = [render_case(image_rng(3, i), True, cfg)[1] for i in range(4)]
        return (np.mean([i.gap_px / i.scale_px for i in infos]),
                np.mean([abs(i.displacement_px) / i.scale_px for i in infos]))

    (easy_gap, easy_disp), (hard_gap, hard_disp) = stats("easy"), stats("hard")
    assert easy_gap > 3 * hard_gap and easy_disp > 0.5 > hard_disp


def test_side_markers_are_drawn_bright_near_an_edge():
    cfg = SynthConfig(n=1, marker_p=1.0, **SMALL)
    img, info = render_case(image_rng(2, 0), False, cfg)
    assert info.marker in {"R", "L"}
    x0, y0, x1, y1 = info.marker_box
    assert img[y0:y1, x0:x1].max() > 0.75
    assert min(x0, y0, img.shape[1] - x1, img.shape[0] - y1) < 0.25 * min(img.shape)
    assert render_case(image_rng(2, 0), False, SynthConfig(n=1, marker_p=0.0, **SMALL))[1].marker is None


# --- the dataset on disk ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    cfg = SynthConfig(n=6, test_n=4, seed=4)
    seen = []

    class Record(Progress):
        def start(self, description, total=None, done=0):
            self.total, self.done = total, done

        def advance(self, n=1):
            self.done += n
            seen.append((self.done, self.total))

    summary = generate_dataset(out, cfg, progress=Record(), workers=2)
    return out, cfg, summary, seen


def test_dataset_layout_counts_answers_and_manifest(dataset):
    out, cfg, summary, seen = dataset
    assert files(out / "Fractured") and files(out / "Normal")
    assert len(files(out / "Fractured")) == 3 and len(files(out / "Normal")) == 3
    images = [f.split("/")[-1] for f in files(out, "*.png")]
    assert len(images) == 10 and all(f.startswith("synth_") for f in images)
    assert sorted(files(out)) == sorted(files(out, "*.png") + ["synth.json", "test_answers.csv"])
    tests = files(out / "test")
    assert len(tests) == 4 and summary["counts"] == {"Fractured": 3, "Normal": 3}
    key = read_answers(out / "test_answers.csv")
    assert sorted(key) == tests and sorted(key.values()) == ["Fractured"] * 2 + ["Normal"] * 2
    manifest = json.loads((out / "synth.json").read_text())
    assert SynthConfig.from_dict(manifest["config"]) == cfg
    assert len(manifest["images"]) == 10 and seen[-1] == (10, 10)
    by_path = {r["path"]: r for r in manifest["images"]}
    for rel, label in key.items():
        assert by_path[f"test/{rel}"]["label"] == label
        assert (by_path[f"test/{rel}"]["bone"] is not None) == (label == "Fractured")
    for rec in manifest["images"]:
        with Image.open(out / rec["path"]) as im:
            assert im.mode == "L" and im.size == (rec["width"], rec["height"])
            assert 380 <= min(im.size) and max(im.size) <= 640


def test_same_seed_same_bytes_whatever_the_worker_count(dataset, tmp_path):
    out, cfg, _, _ = dataset
    again = tmp_path / "again"
    generate_dataset(again, cfg, workers=1)
    names = files(out)
    assert names == files(again)
    for name in names:
        if name != "synth.json":
            assert (out / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other"
    generate_dataset(other, SynthConfig(n=2, seed=5, **SMALL), workers=1)
    generate_dataset(again, SynthConfig(n=2, seed=4, **SMALL), workers=1, overwrite=True)
    a, b = (sorted((d / "Fractured").iterdir())[0].read_bytes() for d in (again, other))
    assert a != b


def test_labels_are_balanced_exactly_and_image_seeds_are_per_index():
    jobs = plan_jobs(SynthConfig(n=9, test_n=5, fractured_fraction=1 / 3))
    train, test = jobs[:9], jobs[9:]
    assert sum(j.label == "Fractured" for j in train) == 3
    assert [j.index for j in jobs] == list(range(14))
    assert all(j.relpath.startswith("test/") for j in test)
    assert len({j.relpath for j in jobs}) == 14


def test_sixteen_bit_png_uses_the_full_range(tmp_path):
    generate_dataset(tmp_path / "d", SynthConfig(n=2, bit_depth=16, **SMALL), workers=1)
    for path in (tmp_path / "d").rglob("*.png"):
        with Image.open(path) as im:
            assert im.mode == "I;16"
            arr = np.asarray(im)
        assert len(np.unique(arr)) > 1000 and arr.max() > 40000


@pytest.mark.parametrize("fmt, rgb, mode, suffix, pil_format", [
    ("png", True, "RGB", ".png", "PNG"),
    ("jpeg", False, "L", ".jpg", "JPEG"),
    ("jpeg", True, "RGB", ".jpg", "JPEG"),
])
def test_rgb_and_jpeg_variants(tmp_path, fmt, rgb, mode, suffix, pil_format):
    generate_dataset(tmp_path / "d", SynthConfig(n=2, image_format=fmt, rgb=rgb, **SMALL), workers=1)
    paths = [p for p in (tmp_path / "d").rglob("*") if p.parent.name in ("Fractured", "Normal")]
    assert len(paths) == 2 and all(p.suffix == suffix for p in paths)
    for path in paths:
        with Image.open(path) as im:
            assert (im.mode, im.format) == (mode, pil_format)
            arr = np.asarray(im)
        if mode == "RGB":  # a grey radiograph stored in three equal channels (up to JPEG error)
            assert np.abs(arr[..., 0].astype(int) - arr[..., 2]).max() <= (0 if fmt == "png" else 8)


def test_refuses_to_mix_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        generate_dataset(tmp_path, SynthConfig(n=1, **SMALL))
    with pytest.raises(ConfigError, match="not a synth output"):
        generate_dataset(tmp_path, SynthConfig(n=1, **SMALL), overwrite=True)
    assert (tmp_path / "notes.txt").exists()


def test_cli_writes_a_dataset_and_reports_bad_options(tmp_path, capsys):
    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(out), "--n", "2", "--seed", "1", "--min-size", "256",
              "--max-size", "260", "--quiet"])
    assert exc.value.code == 0
    assert len(files(out / "Fractured")) == 1 and len(files(out / "Normal")) == 1
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "x"), "--n", "2", "--difficulty", "brutal"])
    assert exc.value.code == 1
    assert "easy, medium, hard" in capsys.readouterr().err


def test_contact_sheet_is_a_png(tmp_path):
    path = save_contact_sheet(tmp_path / "sheet.png", cols=1, min_size=256, max_size=256)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 600
