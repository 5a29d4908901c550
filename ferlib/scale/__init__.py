"""Scale-out on Ray: `ferlib predict --engine ray` and `ferlib extract --engine ray`.

An actor pool: each Ray actor (one CPU) owns one `ferlib.inference.pipeline.Pipeline` (predict) or one
static-mode LandmarkExtractor (extract) for its whole life - MediaPipe graphs are not thread-safe
and take a second to build, so they are made once per actor, never per task.

predict: the inputs are expanded exactly as the local engine does (`ferlib.inference.predict.expand_inputs`)
and cut into tasks - one task per video file, runs of consecutive images in batches of
`image_batch` - and each task runs `ferlib.inference.predict.predict` on an actor. The local engine resets the
pipeline before every file (tracking and smoothing never cross files), so a task per video and
images in any grouping give the very rows of the local engine: same rows, labels and
probabilities, same CSV bytes. Every finished task is written atomically as a JSON shard to the
shard folder (default `<out>.shards/`), named by the task's position and a key over the model,
the settings and the task's files (path, size, mtime); a rerun after a crash or kill skips the
tasks whose shard is there, and the CSV is assembled from the shards in input order.

extract: the landmark cache is the resume mechanism already (ferlib.data.cache writes a shard every
`shard_size` new results); `RayExtractRunner` only replaces its process pool by actors that run
the same per-image function, so cached entries are identical to a local run's.

Ray is imported only here, inside `start_ray`, and only when the ray engine is used. A local
cluster (no --address) gets `num_cpus` = workers, no dashboard, no usage statistics, and binds
to 127.0.0.1 only (Ray's single-machine mode, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); run from a
source checkout, its workers get the checkout on PYTHONPATH, so a `ferlib/` folder in the working
directory (which Ray puts on their sys.path) cannot shadow the package (`_import_path_env`).
"""
from ferlib.scale.cluster import ENGINES, RayMissingError, check_workers, start_ray
from ferlib.scale.extract import RayExtractRunner, extract_runner
from ferlib.scale.predict import (
    PredictSettings,
    RayPredictRun,
    Task,
    default_shard_dir,
    plan_tasks,
    predict_command,
    predict_ray,
    shard_path,
    task_key,
    write_csv,
)

__all__ = ["ENGINES", "PredictSettings", "RayExtractRunner", "RayMissingError", "RayPredictRun", "Task",
           "check_workers", "default_shard_dir", "extract_runner", "plan_tasks", "predict_command", "predict_ray",
           "shard_path", "start_ray", "task_key", "write_csv"]
