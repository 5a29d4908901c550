"""Frontalised crops (ferlib.faces.frontalize, ferlib.faces.crops.frontal_crop) on the committed real clip:
the 3-D turn and its undoing, the crop rule of image models, and the extractor and Pipeline settings."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ferlib.errors import InputError
from ferlib.faces.crops import FRONTAL_MIN_YAW, face_crop, frontal_crop, model_crop
from ferlib.faces.frontalize import frontal_points, turn_face
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.faces.normalize import rotation_matrix


@pytest.fixture(scope="module")
def face_frame(fixture_clip):
    """A clip frame whose one face looks nearly at the camera, with its real face mesh."""
    from ferlib.io import iter_video

    frame = next(bgr for idx, _, bgr in iter_video(fixture_clip, max_frames=301) if idx == 300)
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        faces = ex.process(frame)
    assert len(faces) == 1 and faces[0].landmarks is not None
    assert abs(faces[0].pose[0]) < 10, faces[0].pose
    return frame, faces[0]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def test_frontal_points_undo_a_known_turn(face_frame):
    _, face = face_frame
    pts = face.landmarks.astype(np.float64)
    c = pts.mean(axis=0)
    turned = c + (pts - c) @ rotation_matrix(35.0, 0.0, 0.0).T
    back, yaw = frontal_points(turned)
    assert abs(yaw - (face.pose[0] + 35.0)) < 2.0, yaw  # head_pose reads the turn
    front, _ = frontal_points(pts)
    size = np.ptp(pts[:, 0])
    err = np.abs(back[:, :2] - front[:, :2]) / size
    # the same frontal face from the turned points and from the original (the head's own pitch and
    # roll make a turn about the camera's vertical axis a little more than a yaw)
    assert err.mean() < 0.015 and err.max() < 0.06, (err.mean(), err.max())


def test_frontal_crop_undoes_a_turn(face_frame):
    """A real frame turned 40 degrees in 3-D (`turn_face`, the synthetic turns' warp): frontalised with
    the turned points, its crop is close to the original face's, much closer than its plain crop; a
    frontal face's crop hardly changes."""
    frame, face = face_frame
    reference = face_crop(frame, face, 48)
    near = frontal_crop(frame, face.landmarks, 48, pose=face.pose)
    assert near.shape == (48, 48) and near.dtype == np.uint8
    assert _corr(near, reference) > 0.9
    pts = face.landmarks.astype(np.float64)
    turned = turn_face(frame, pts, 40.0)
    c = pts.mean(axis=0)
    a = np.deg2rad(40.0)
    moved = c + (pts - c) @ np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]).T
    plain = face_crop(turned, replace(face, landmarks=moved.astype(np.float32)), 48)
    front = frontal_crop(turned, moved, 48)
    assert _corr(front, near) > 0.8 and _corr(front, near) > _corr(plain, near) + 0.1, \
        (_corr(front, near), _corr(plain, near))
    colour = frontal_crop(turned, moved, 32, grey=False)
    assert colour.shape == (32, 32, 3)


def test_model_crop_frontalises_turned_faces_only(face_frame):
    frame, face = face_frame
    box_only = replace(face, landmarks=None)
    # nearly frontal: framed on the detector box, exactly as a face without landmarks
    np.testing.assert_array_equal(model_crop(frame, face, 48, frontal=True), face_crop(frame, box_only, 48))
    np.testing.assert_array_equal(model_crop(frame, face, 48), face_crop(frame, face, 48))
    turned = replace(face, pose=(FRONTAL_MIN_YAW + 5.0, *face.pose[1:]))
    np.testing.assert_array_equal(model_crop(frame, turned, 48, frontal=True),
                                  frontal_crop(frame, face.landmarks, 48, pose=turned.pose, box=face.box))
    # framed with the detector box, a frontal face's frontalised crop is its detector-box crop, nearly
    boxed = frontal_crop(frame, face.landmarks, 48, pose=face.pose, box=face.box)
    assert _corr(boxed, face_crop(frame, box_only, 48)) > 0.95
    np.testing.assert_array_equal(model_crop(frame, box_only, 48, frontal=True), face_crop(frame, box_only, 48))


def test_frontal_crop_refuses_bad_input(face_frame):
    frame, face = face_frame
    with pytest.raises(InputError):
        frontal_points(None)
    with pytest.raises(InputError):
        frontal_points(np.zeros((478, 2)))
    with pytest.raises(InputError):
        frontal_points(np.full((478, 3), np.nan))
    with pytest.raises(InputError):
        frontal_crop(frame, face.landmarks, 0)


def test_extractor_meshes_the_boxes_of_small_frames_only(face_frame):
    frame, _ = face_frame
    group = np.hstack([frame, frame, frame])
    with LandmarkExtractor(mode="static", mesh=False, mesh_max_faces=2) as ex:
        one, three = ex.process(frame), ex.process(group)
    assert len(one) == 1 and one[0].landmarks is not None and one[0].pose is not None
    assert len(three) == 3 and all(f.landmarks is None for f in three)
    with LandmarkExtractor(mode="static", mesh=False) as ex:
        assert ex.process(frame)[0].landmarks is None  # the default: boxes only
    with pytest.raises(InputError):
        LandmarkExtractor(mesh_max_faces=-1)


def test_pipeline_frontalises_image_models_in_small_frames(face_frame):
    from ferlib.inference.pipeline import FRONTAL_MAX_FACES, Pipeline

    frame, face = face_frame
    turned = turn_face(frame, face.landmarks.astype(np.float64), -45.0)
    with Pipeline(mode="static") as on, Pipeline(mode="static", frontalize=False) as off:
        assert on.frontalize and on.extractor.mesh_max_faces == FRONTAL_MAX_FACES
        assert not off.frontalize and off.extractor.mesh_max_faces == 0
        a, b = on.process(turned).predictions, off.process(turned).predictions
        assert len(a) == len(b) == 1 and a[0].face.path == "mesh" and b[0].face.path == "box"
        assert not np.allclose(a[0].probs, b[0].probs, atol=1e-4), "the frontalised crop is read"
        same = on.process(frame).predictions, off.process(frame).predictions  # frontal: the same crop
        np.testing.assert_allclose(same[0][0].probs, same[1][0].probs, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError):
        Pipeline(frontal_max_faces=-1)


def test_turned_faces_go_to_the_turned_expert(face_frame):
    """The default's card names a turned-face expert: a face the default would frontalise is read by it
    (Prediction.model says so), a frontal face and the faces of a bigger group by the default."""
    from ferlib.errors import ModelFileError
    from ferlib.inference.checkpoint import base_of
    from ferlib.inference.pipeline import Pipeline, turned_expert_of

    frame, face = face_frame
    turned_frame = turn_face(frame, face.landmarks.astype(np.float64), -45.0)
    with Pipeline(mode="static") as pipe:
        expert = turned_expert_of(pipe.card)
        assert expert is not None and pipe.turned is not None and pipe.turned.name == expert.stem
        assert "turned_expert" not in base_of(pipe.card), "a model tuned from the default reads turned faces itself"
        (a,) = pipe.process(turned_frame).predictions
        (b,) = pipe.process(frame).predictions
        assert (a.model, b.model) == (pipe.turned.name, pipe.name)
        crowd = pipe.process(np.hstack([turned_frame] * 3)).predictions
        assert len(crowd) == 3 and {p.model for p in crowd} == {pipe.name}  # a group: no mesh, one model
    with Pipeline(mode="static", turned_model=None) as alone:
        assert alone.turned is None
        (c,) = alone.process(turned_frame).predictions
        assert c.model == alone.name and not np.allclose(c.probs, a.probs, atol=1e-4)
    with pytest.raises(ModelFileError):  # an expert must be an image model with the same classes
        Pipeline(mode="static", turned_model="landmark_cnn1d_fer2013")


def test_frontalisation_follows_the_card_unless_asked():
    """frontalize=None: on for a model whose card names a turned_expert (the default), off for one that
    does not (a personal model trained on plain crops, the width-16 model); True or False overrides."""
    from ferlib.inference.pipeline import Pipeline

    with Pipeline("resnet18_attention_ferplus", mode="static") as plain, \
            Pipeline("resnet18_attention_ferplus", mode="static", frontalize=True) as forced, \
            Pipeline(mode="static", frontalize=False) as off:
        assert not plain.frontalize and plain.extractor.mesh_max_faces == 0 and plain.turned is None
        assert forced.frontalize and forced.turned is None  # no expert named: it reads turned faces itself
        assert not off.frontalize and off.turned is None


def test_evaluate_reads_large_images_as_predict_does(tmp_path, face_frame):
    """`ferlib evaluate` and `ferlib predict` give the default the same faces: crops framed on the detector box,
    and a face turned 20 degrees or more frontalised and read by the turned-face expert. Before, evaluate
    framed every face on its landmarks and never used the expert (AffectNet held-out at 350 px: evaluate
    0.493, predict 0.569; now both 0.569)."""
    import cv2

    from ferlib.data.importers import import_image_folder
    from ferlib.data.tensors import prepare
    from ferlib.faces.frontalize import turn_face
    from ferlib.inference.checkpoint import card_spec
    from ferlib.inference.pipeline import Pipeline, default_model_path, turned_expert_of
    from ferlib.inference.predict import predict
    from ferlib.inference.runtime import load_runner
    from ferlib.training.evaluate import evaluate_prepared, read_prepared

    frame, face = face_frame
    pts = face.landmarks.astype(np.float64)
    images = {"happy/front.png": frame, "sad/left60.png": turn_face(frame, pts, 60.0),
              "sad/right40.png": turn_face(frame, pts, -40.0), "happy/small.png": cv2.resize(frame, (96, 54))}
    for name, img in images.items():
        (tmp_path / "set" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "set" / name), img)
    model = load_runner(default_model_path())
    expert_path = turned_expert_of(model.card)
    if expert_path is None:
        pytest.skip("the default's card names no turned-face expert")
    with Pipeline(mode="static") as pipe:
        table = predict([tmp_path / "set"], pipe).table
    spec, classes = card_spec(model.card), list(model.card["classes"])
    prep = prepare(import_image_folder(tmp_path / "set"), spec, classes, framing="frontal",
                   cache_dir=tmp_path / "cache", workers=1)
    probs, by_expert = read_prepared(model, prep, tta_flip=True, expert=load_runner(expert_path))
    assert prep.detected.all() and by_expert.sum() == 2  # the two turned faces, not the small image's
    names = prep.df["path"].map(lambda p: "/".join(str(p).split("/")[-2:]))
    assert set(names[by_expert]) == {"sad/left60.png", "sad/right40.png"}
    large = (names != "happy/small.png").to_numpy()
    np.testing.assert_array_equal(by_expert, (np.abs(prep.poses[:, 0]) >= FRONTAL_MIN_YAW) & large)
    ours = table.assign(name=table["source"].map(lambda p: "/".join(p.split("/")[-2:]))).set_index("name")
    assert (ours["detected"] == 1).all() and len(ours) == len(images)
    theirs = ours.loc[list(names), [f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs, theirs, rtol=1e-4, atol=1e-5)
    metrics = evaluate_prepared(model, prep, tta_flip=True, expert=load_runner(expert_path))
    assert metrics["turned_expert"] == {"model": load_runner(expert_path).name, "faces": 2}
    labels = prep.df["label"].astype(str).to_numpy()
    assert metrics["accuracy_all"] == pytest.approx(np.mean(np.array(classes)[theirs.argmax(1)] == labels))


def test_evaluate_frames_a_plain_image_model_as_predict_does(tmp_path, face_frame):
    """An image model without a turned-face expert: `prepare` crops a large image's face on its detector box,
    as `predict` does, and an image where nobody finds a face is a miss in both (it used to be read whole)."""
    import cv2

    from ferlib.data.importers import import_image_folder
    from ferlib.data.tensors import prepare
    from ferlib.faces.frontalize import turn_face
    from ferlib.inference.checkpoint import card_spec, card_tta_flip
    from ferlib.inference.pipeline import Pipeline
    from ferlib.inference.predict import predict
    from ferlib.inference.runtime import load_runner
    from ferlib.training.evaluate import evaluate_prepared, read_prepared
    from tests.helpers import ROOT

    frame, face = face_frame
    images = {"happy/front.png": frame, "sad/left60.png": turn_face(frame, face.landmarks.astype(np.float64), 60.0),
              "sad/blank.png": np.full((360, 640, 3), 90, np.uint8)}
    for name, img in images.items():
        (tmp_path / "set" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "set" / name), img)
    model = load_runner(ROOT / "models" / "image_cnn_fer2013")
    spec, classes, tta = card_spec(model.card), list(model.card["classes"]), card_tta_flip(model.card)
    assert spec.box_framed
    with Pipeline(ROOT / "models" / "image_cnn_fer2013", mode="static") as pipe:
        assert not pipe.frontalize
        table = predict([tmp_path / "set"], pipe).table
    prep = prepare(import_image_folder(tmp_path / "set"), spec, classes, cache_dir=tmp_path / "cache", workers=1)
    names = prep.df["path"].map(lambda p: "/".join(str(p).split("/")[-2:])).to_numpy()
    assert prep.missed is not None and list(names[prep.missed]) == ["sad/blank.png"]
    assert prep.detected.all()  # training still reads every row (the miss whole)
    probs, by_expert = read_prepared(model, prep, tta_flip=tta)
    assert not by_expert.any() and len(probs) == 2
    ours = table.assign(name=table["source"].map(lambda p: "/".join(p.split("/")[-2:]))).set_index("name")
    assert ours.loc["sad/blank.png", "detected"] == 0
    found = names[prep.evaluated]
    np.testing.assert_allclose(probs, ours.loc[list(found), [f"p_{c}" for c in classes]].to_numpy(),
                               rtol=1e-4, atol=1e-5)
    metrics = evaluate_prepared(model, prep, tta_flip=tta)
    assert metrics["n"] == 3 and metrics["n_detected"] == 2
