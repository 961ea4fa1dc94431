"""autoPET II evaluation: per-case and test-set metrics (metrics), folder CLI (cli), QA pictures (mip).

The pictures module imports matplotlib, so it is not imported here; use ``evaluation.mip`` directly.
"""

from evaluation.metrics import (
    Aggregate,
    CaseMetrics,
    GridMismatchError,
    aggregate,
    case_metrics,
    check_same_grid,
    evaluate_images,
    voxel_volume_ml,
)

__all__ = [
    "Aggregate",
    "CaseMetrics",
    "GridMismatchError",
    "aggregate",
    "case_metrics",
    "check_same_grid",
    "evaluate_images",
    "voxel_volume_ml",
]
