"""The project-export importer (a real importer on the toolkit): format, schema, importer."""

from conveyor.features.imports.project.format import write_export
from conveyor.features.imports.project.importer import (
    NAME,
    ProjectImporter,
    default_db_url,
    start_project_import,
)

__all__ = ["NAME", "ProjectImporter", "default_db_url", "start_project_import", "write_export"]
