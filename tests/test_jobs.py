"""The job model stands apart from the manifest language."""

from __future__ import annotations

import subprocess
import sys

PARSER_MODULES = ("yaml", "jsonschema", "ruxa_batch.yamlsource", "ruxa_batch.schema")


def test_job_model_imports_neither_yaml_nor_the_schema() -> None:
    code = (
        "import sys, ruxa_batch.jobs; "
        f"print(' '.join(name for name in {PARSER_MODULES!r} if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
