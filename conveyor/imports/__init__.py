"""Import pipelines toolkit (SPEC IMP-*). So far: upload validation before anything runs."""

from conveyor.imports.validation import (
    ArchiveEntry,
    UploadLimits,
    ValidatedUpload,
    extract,
    validate_upload,
)

__all__ = ["ArchiveEntry", "UploadLimits", "ValidatedUpload", "extract", "validate_upload"]
