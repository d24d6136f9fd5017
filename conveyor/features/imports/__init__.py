"""Import pipelines toolkit (SPEC IMP-*): upload validation, multi-stage imports made of jobs
(pending counters in Redis, progress pointers, failures per record, a 24 h cache, stuck
detection, partial retry, the ``importing`` flag, a health-signal hook) and, in
:mod:`conveyor.features.imports.project`, a real importer of project export archives."""

from conveyor.features.imports.base import Importer, StageRun
from conveyor.features.imports.cache import DEFAULT_TTL, ImportCache, key_of
from conveyor.features.imports.flag import BulkHooks, Importable, importing, is_importing
from conveyor.features.imports.model import (
    Failure,
    HealthSignal,
    ImportSettings,
    ImportState,
    RecordRef,
    StageProgress,
)
from conveyor.features.imports.pipeline import Imports
from conveyor.features.imports.validation import (
    ArchiveEntry,
    UploadLimits,
    ValidatedUpload,
    extract,
    validate_upload,
)

__all__ = [
    "DEFAULT_TTL",
    "ArchiveEntry",
    "BulkHooks",
    "Failure",
    "HealthSignal",
    "ImportCache",
    "ImportSettings",
    "ImportState",
    "Importable",
    "Importer",
    "Imports",
    "RecordRef",
    "StageProgress",
    "StageRun",
    "UploadLimits",
    "ValidatedUpload",
    "extract",
    "importing",
    "is_importing",
    "key_of",
    "validate_upload",
]
