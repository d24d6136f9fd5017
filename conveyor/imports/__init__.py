"""Import pipelines toolkit (SPEC IMP-*): upload validation, multi-stage imports made of jobs
(pending counters in Redis, progress pointers, failures per record, a 24 h cache, stuck
detection, partial retry, the ``importing`` flag, a health-signal hook) and, in
:mod:`conveyor.imports.project`, a real importer of project export archives."""

from conveyor.imports.base import Importer, StageRun
from conveyor.imports.cache import DEFAULT_TTL, ImportCache, key_of
from conveyor.imports.context import BulkHooks, Importable, importing, is_importing
from conveyor.imports.model import (
    Failure,
    HealthSignal,
    ImportSettings,
    ImportState,
    RecordRef,
    StageProgress,
)
from conveyor.imports.pipeline import Imports
from conveyor.imports.validation import (
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
