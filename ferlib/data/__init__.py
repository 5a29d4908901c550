"""Datasets: importers (one `Dataset` of samples per source), splits, extraction and crop caches."""
from ferlib.data.cache import Crops, Extraction, default_cache_dir, detection_summary, extract_crops, extract_landmarks
from ferlib.data.dataset import Dataset
from ferlib.data.importers import (
    COLUMNS,
    check_zip,
    import_affectnet,
    import_ckplus,
    import_fer2013,
    import_fer2013_csv,
    import_ferplus,
    import_image_folder,
    import_recordings,
    open_zip,
    read_bytes,
    read_image,
    read_sample,
    resize_square,
    zip_path,
)
from ferlib.data.splits import chunked_split, first_per_class, split_counts, subject_split

__all__ = [
    "COLUMNS", "Crops", "Dataset", "Extraction", "check_zip", "chunked_split", "default_cache_dir", "detection_summary",
    "extract_crops", "extract_landmarks", "import_affectnet", "import_ckplus", "import_fer2013",
    "import_fer2013_csv", "import_ferplus", "import_image_folder", "import_recordings", "open_zip", "read_bytes",
    "read_image", "read_sample", "resize_square", "first_per_class", "split_counts", "subject_split", "zip_path",
]
