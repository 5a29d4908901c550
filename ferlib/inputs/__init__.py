"""Model inputs: the one place where landmarks and face crops become tensors.

`build_batch(spec, landmarks_px, crops, stratum)` is used by training, evaluation and the live
pipeline alike, so a model sees identical inputs everywhere. `InputSpec` (stored in every model
card) says what to build; `Augmenter` applies training-time augmentation to built batches;
`TensorSet` is the in-memory dataset that train/evaluate consume.

spec: InputSpec, spec_for_model. batch: build_batch and its parts, TensorSet. augment: Mirror,
Augmenter, turn_images, PoseAugmenter.
"""
from ferlib.inputs.augment import Augmenter, Mirror, PoseAugmenter, _local_mirror, turn_images
from ferlib.inputs.batch import (
    TensorSet,
    build_batch,
    clarity_score,
    clarity_stratum,
    keypoint_targets,
    region_patches,
    render_heatmaps,
)
from ferlib.inputs.spec import KEYS, KINDS, PATCH_REGIONS, REGIONS, InputSpec, spec_for_model

__all__ = [
    "KEYS", "KINDS", "PATCH_REGIONS", "REGIONS", "Augmenter", "InputSpec", "Mirror", "PoseAugmenter", "TensorSet",
    "_local_mirror", "build_batch", "clarity_score", "clarity_stratum", "keypoint_targets", "region_patches",
    "render_heatmaps", "spec_for_model", "turn_images",
]
