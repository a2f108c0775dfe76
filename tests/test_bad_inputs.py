"""Every bad input in tests/data/ gets clear, located lines and exit code 2, never a traceback."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from helpers import DATA

# file -> the exact error line(s) `ruxa-batch validate` prints for it
EXPECTED: dict[str, list[str]] = {
    "syntax_error.yaml": [
        "syntax_error.yaml:5:15: $: YAML syntax error: did not find expected key "
        "(while parsing a block mapping that starts on line 3)"
    ],
    "tab_indent.yaml": [
        "tab_indent.yaml:4:1: $: YAML syntax error: a tab character is used for indentation; "
        "YAML needs spaces"
    ],
    "root_is_list.yaml": [
        "root_is_list.yaml:1:1: $: the manifest must be a mapping of keys (version, jobs, ...), "
        "not a list"
    ],
    "duplicate_key.yaml": [
        "duplicate_key.yaml:6:5: $.jobs[0].prompt: duplicate key 'prompt' (first defined on line 4)"
    ],
    "alias_bomb.yaml": [
        "alias_bomb.yaml:8:43: $: YAML aliases expand to more than 2,000,000 values "
        "(an alias bomb?); refusing to load"
    ],
    "binary_garbage.yaml": [
        "binary_garbage.yaml:4:1: $: file contains binary data (a NUL byte); expected UTF-8 text"
    ],
    "latin1.yaml": ["latin1.yaml:3:1: $: file is not valid UTF-8 text (byte 0xe9)"],
    "empty.yaml": ["empty.yaml:1:1: $: the file is empty; expected a manifest"],
    "broken_model_callback_and_image.yaml": [
        "broken_model_callback_and_image.yaml:2:8: $.model: 'google/nano-banana-bad' is not a "
        "valid model; did you mean 'google/nano-banana'? (allowed: google/nano-banana-edit, "
        "google/nano-banana, google/nano-banana-pro)",
        "broken_model_callback_and_image.yaml:3:15: $.callback_url: 'ftp://x.example/hook' is "
        "not valid: use an http:// or https:// URL with a host",
        "broken_model_callback_and_image.yaml:7:14: $.jobs[0].images[0]: 'file:///etc/passwd' "
        "is not an http(s) URL",
    ],
    "callback_not_http.yaml": [
        "callback_not_http.yaml:2:15: $.callback_url: 'ftp://x.example/hook' is not valid: "
        "use an http:// or https:// URL with a host"
    ],
    "non_finite_number.yaml": [
        "non_finite_number.yaml:3:18: $.run.poll_interval: must be a finite number, "
        "not .inf or .nan"
    ],
    "two_documents.yaml": [
        "two_documents.yaml:6:1: $: expected one YAML document, found more than one"
    ],
    "python_tag.yaml": [
        "python_tag.yaml:4:13: $.jobs[0].prompt: unsupported YAML tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"
    ],
    "missing_csv.yaml": [
        "missing_csv.yaml:6:11: $.jobs[0].rows: data/no-such-file.csv: CSV file not found"
    ],
    "ragged_csv.yaml": ["ragged.csv:3:1: $.jobs[0].rows: row has 3 fields; the header has 2"],
    "csv_bad_header.yaml": [
        "bad_header.csv:1:2: $.jobs[0].rows: column 2 is named 'product name'; use a variable "
        "name (letters, digits and _, not starting with a digit)"
    ],
    "csv_secret_in_header.yaml": [
        "secret_header.env:1:1: $.jobs[0].rows: column 1 of the header looks like a Ruxa API "
        "key; the API key belongs in the RUXA_API_KEY environment variable, never in a file that "
        "goes into git"
    ],
    "csv_secret_column.yaml": [
        "secret_column.csv:1:2: $.jobs[0].rows: column 2 of the header names a secret; the API "
        "key belongs in the RUXA_API_KEY environment variable, never in a file that goes into git"
    ],
    "csv_secret_value.yaml": [
        "secret_value.csv:3:2: $.jobs[0].rows: this value looks like a Ruxa API key; keys belong "
        "in the RUXA_API_KEY environment variable, never in a file that goes into git"
    ],
    "csv_outside_folder.yaml": [
        "csv_outside_folder.yaml:6:11: $.jobs[0].rows: '../../../../etc/passwd' is outside the "
        "manifest's folder; a rows CSV file must be in that folder or below it"
    ],
    "matrix_explosion.yaml": [
        "matrix_explosion.yaml:3:5: $.jobs[0]: the manifest expands to more than 100,000 jobs "
        "counting variants (this entry alone: 160,000); raise --max-jobs if that is intended"
    ],
    "wrong_type.yaml": ["wrong_type.yaml:5:13: $.jobs[0].images: expected a list, got a string"],
    "wrong_version.yaml": ["wrong_version.yaml:1:10: $.version: must be 1, got 2"],
    "missing_jobs.yaml": ["missing_jobs.yaml:1:1: $: missing required key 'jobs'"],
    "bad_image_size.yaml": [
        "bad_image_size.yaml:6:17: $.jobs[0].image_size: '16:10' is not a valid image_size; "
        "did you mean '3:2' or '16:9'? "
        "(allowed: 1:1, 9:16, 16:9, 3:4, 4:3, 3:2, 2:3, 5:4, 4:5, 21:9, auto)"
    ],
    "bad_output_format.yaml": [
        "bad_output_format.yaml:3:18: $.defaults.output_format: 'jpg' is not a valid "
        "output_format; did you mean 'jpeg'? (allowed: png, jpeg)"
    ],
    "ftp_url.yaml": [
        "ftp_url.yaml:5:14: $.jobs[0].images[0]: 'ftp://cdn.example.com/mug.png' is not an "
        "http(s) URL"
    ],
    "empty_prompt.yaml": ["empty_prompt.yaml:4:13: $.jobs[0].prompt: must not be empty or blank"],
    "too_many_images.yaml": [
        "too_many_images.yaml:7:13: $.jobs[0].images: has 11 entries; at most 10 allowed"
    ],
    "bad_id.yaml": [
        "bad_id.yaml:3:9: $.jobs[0].id: '../../etc/passwd' is not valid: use letters, digits, "
        "'.', '_' and '-', starting with a letter or digit, at most 128 characters"
    ],
    "unbalanced_brace.yaml": [
        "unbalanced_brace.yaml:3:9: $.jobs[0].id: unbalanced '{': write {{ for a literal brace"
    ],
    "duplicate_id_after_expansion.yaml": [
        "duplicate_id_after_expansion.yaml:3:9: $.jobs[0].id: duplicate id 'mug' (first from "
        "jobs[0] (colour=red), line 3); add a matrix or rows "
        "variable to the id template"
    ],
    "same_request.yaml": [
        "same_request.yaml:6:9: $.jobs[1].id: job 'mug-b' sends exactly the same request as job "
        "'mug-a' (jobs[0], line 3); use 'variants: 2' on one job to get several "
        "generations of one request"
    ],
    "misspelled_key.yaml": [
        "misspelled_key.yaml:4:5: $.jobs[0].promt: unknown key 'promt'; did you mean 'prompt'?"
    ],
    "unknown_variable.yaml": [
        "unknown_variable.yaml:7:14: $.jobs[0].images[0]: unknown variable {cnd}; "
        "did you mean 'cdn'?"
    ],
    "filename_collision.yaml": [
        "filename_collision.yaml:3:13: $.output.filename: output.filename gives job 'mug-pixel' "
        "variant 1 and job 'mug-pixel' variant 2 the same file name 'mug-pixel-1.png'; "
        'add {variant}, e.g. "{id}-v{variant}-{n}.{ext}"'
    ],
    "suffix_collision.yaml": [
        "suffix_collision.yaml:3:13: $.output.filename: output.filename gives output 2 of job "
        "'mug' and output 1 of job 'mug-2' the same file name 'mug-2.png' (without {n}, a task's "
        "second and later pictures get -2, -3... before the extension); put {n} in it, "
        'e.g. "{id}-{n}.{ext}", or rename one of the jobs'
    ],
    "secret_key.yaml": [
        "secret_key.yaml:2:1: $.api_key: 'api_key' looks like a secret; the API key belongs in "
        "the RUXA_API_KEY environment variable, never in a file that goes into git"
    ],
    "api_key_value.yaml": [
        "api_key_value.yaml:3:9: $.vars.auth: this value looks like a Ruxa API key; keys belong "
        "in the RUXA_API_KEY environment variable, never in a file that goes into git"
    ],
    "api_key_as_image_size.yaml": [
        "api_key_as_image_size.yaml:5:17: $.jobs[0].image_size: this value looks like a Ruxa API "
        "key; keys belong in the RUXA_API_KEY environment variable, never in a file that goes "
        "into git"
    ],
    "several_problems.yaml": [
        "several_problems.yaml:2:1: $.nmae: unknown key 'nmae'; did you mean 'name'?",
        "several_problems.yaml:5:5: $.jobs[0].promt: unknown key 'promt'; did you mean 'prompt'?",
        "several_problems.yaml:10:17: $.jobs[1].image_size: '16:10' is not a valid image_size; "
        "did you mean '3:2' or '16:9'? "
        "(allowed: 1:1, 9:16, 16:9, 3:4, 4:3, 3:2, 2:3, 5:4, 4:5, 21:9, auto)",
        "several_problems.yaml:11:15: $.jobs[1].variants: must be at most 16, got 40",
    ],
    # Local pictures (tests/data/pictures) and the upload: section.
    "local_absolute_outside.yaml": [
        "local_absolute_outside.yaml:5:14: $.jobs[0].images[0]: '/etc/passwd': outside the "
        "allowed folders: a local image must be in the manifest's folder or below it, or "
        "under a root listed in local_images.roots",
    ],
    "local_directory.yaml": [
        "local_directory.yaml:5:14: $.jobs[0].images[0]: 'pictures': not a regular file: a "
        "folder (to send each picture in it, use files:)",
    ],
    "local_dotdot_escape.yaml": [
        "local_dotdot_escape.yaml:5:14: $.jobs[0].images[0]: "
        "'../../../../../../../../../../etc/passwd': outside the allowed folders: a local "
        "image must be in the manifest's folder or below it, or under a root listed in "
        "local_images.roots",
    ],
    "local_empty_glob.yaml": [
        "local_empty_glob.yaml:6:12: $.jobs[0].files: 'pictures/*.gif' matches no file "
        "(patterns are case-sensitive)",
    ],
    "local_files_variable_clash.yaml": [
        "local_files_variable_clash.yaml:8:12: $.jobs[0].files: files gives the variable "
        "'stem', which vars, matrix or rows also defines; rename that one",
    ],
    "local_glob_only_outside.yaml": [
        "local_glob_only_outside.yaml:6:12: $.jobs[0].files: '/etc/passw*' matches only "
        "files outside the manifest's folder and its allowed roots (local_images.roots)",
    ],
    "local_missing_file.yaml": [
        "local_missing_file.yaml:5:14: $.jobs[0].images[0]: 'pictures/no-such-mug.png': no "
        "such file",
    ],
    "local_not_a_picture.yaml": [
        "local_not_a_picture.yaml:5:14: $.jobs[0].images[0]: 'pictures/not_a_picture.png': "
        "not a picture: its bytes are not PNG, JPEG or WebP, whatever its name",
    ],
    "local_nul_in_path.yaml": [
        "local_nul_in_path.yaml:5:14: $.jobs[0].images[0]: 'pictures/mug\\x00.png': not a "
        "valid path (a NUL character)",
    ],
    "local_too_large.yaml": [
        "local_too_large.yaml:7:14: $.jobs[0].images[0]: 'pictures/mug.png': too large: 129 "
        "bytes, over the cap of 100 bytes (local_images.max_file_mb: 0.0001)",
    ],
    "upload_base_url_query.yaml": [
        "upload_base_url_query.yaml:3:13: $.upload.base_url: base_url must not have a query "
        "or a fragment",
    ],
    "upload_command_without_path.yaml": [
        "upload_command_without_path.yaml:3:12: $.upload.command: the command must take the "
        "file as {path}",
    ],
    "upload_no_method.yaml": [
        "upload_no_method.yaml:3:3: $.upload: say exactly one of s3, command or base_url "
        "(found: none)",
    ],
    "upload_s3_secret_key.yaml": [
        "upload_s3_secret_key.yaml:5:5: $.upload.s3.aws_secret_access_key: "
        "'aws_secret_access_key' looks like a secret; AWS credentials belong in the AWS "
        "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or "
        "~/.aws/credentials, never in a file that goes into git",
    ],
    "upload_two_methods.yaml": [
        "upload_two_methods.yaml:3:3: $.upload: say exactly one of s3, command or base_url "
        "(found: s3, base_url)",
    ],
    "upload_unknown_placeholder.yaml": [
        "upload_unknown_placeholder.yaml:3:37: $.upload.command[2]: unknown placeholder "
        "{size} (known: {path}, {sha256}, {ext}, {name})",
    ],
}


@pytest.fixture
def data_dir(hermetic: Path) -> Path:
    """A copy of tests/data inside the test's working directory, so paths print short."""
    shutil.copytree(DATA, hermetic / "data")
    return hermetic / "data"


def test_every_data_file_is_covered() -> None:
    on_disk = {path.name for path in DATA.glob("*.yaml")} - {"valid_minimal.yaml"}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_is_one_clear_line_per_problem(run, data_dir: Path, name: str) -> None:
    result = run(["ruxa-batch", "validate", f"data/{name}"])
    assert result.code == 2
    assert result.out == ""
    assert result.err.splitlines() == [f"data/{line}" for line in EXPECTED[name]]
    assert "Traceback" not in result.err


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plan_refuses_bad_input_the_same_way(run, data_dir: Path, name: str) -> None:
    result = run(["ruxa-batch", "plan", f"data/{name}"])
    assert result.code == 2
    assert result.err.splitlines() == [f"data/{line}" for line in EXPECTED[name]]


def test_alias_bomb_is_refused_fast(run, data_dir: Path) -> None:
    started = time.perf_counter()
    run(["ruxa-batch", "validate", "data/alias_bomb.yaml"])
    assert time.perf_counter() - started < 0.5


def test_deep_nesting_is_refused_not_crashed(run, hermetic: Path) -> None:
    (hermetic / "deep.yaml").write_text("jobs: " + "[" * 100 + "]" * 100 + "\n")
    result = run(["ruxa-batch", "validate", "deep.yaml"])
    assert result.code == 2
    assert (
        result.err == "deep.yaml:1:70: $: YAML nesting is deeper than 64 levels; refusing to load\n"
    )


def test_absurd_nesting_is_one_line_too(run, hermetic: Path) -> None:
    (hermetic / "deep.yaml").write_text("jobs: " + "[" * 200_000 + "\n")
    result = run(["ruxa-batch", "validate", "deep.yaml"])
    assert result.code == 2
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith("deep.yaml:1:")


def test_recursive_alias(run, hermetic: Path) -> None:
    (hermetic / "loop.yaml").write_text("version: 1\njobs: &a [*a]\n")
    result = run(["ruxa-batch", "validate", "loop.yaml"])
    assert result.code == 2
    assert (
        result.err == "loop.yaml:2:11: $.jobs[0]: recursive YAML alias: a node refers to itself\n"
    )


def test_file_over_10_mb_is_refused_without_parsing(run, hermetic: Path) -> None:
    big = hermetic / "big.yaml"
    with big.open("w") as handle:
        handle.write("version: 1\njobs:\n")
        line = "  - {id: x, prompt: p, images: ['https://cdn.example.com/x.png']}\n"
        handle.write(line * (10 * 1024 * 1024 // len(line) + 1))
    result = run(["ruxa-batch", "validate", "big.yaml"])
    assert result.code == 2
    assert result.err == "big.yaml: $: file is larger than 10 MB; refusing to read it\n"


def test_missing_file(run) -> None:
    result = run(["ruxa-batch", "validate", "nope.yaml"])
    assert (result.code, result.err) == (2, "nope.yaml: $: file not found\n")


def test_unreadable_file_a_directory(run, hermetic: Path) -> None:
    (hermetic / "folder.yaml").mkdir()
    result = run(["ruxa-batch", "validate", "folder.yaml"])
    assert (result.code, result.err) == (2, "folder.yaml: $: is a directory, not a file\n")


def test_csv_with_header_only(run, hermetic: Path) -> None:
    (hermetic / "rows.csv").write_text("sku\n")
    (hermetic / "m.yaml").write_text(
        "version: 1\njobs:\n  - id: '{sku}'\n    prompt: p\n"
        "    images: ['https://cdn.example.com/{sku}.png']\n    rows: rows.csv\n"
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.err == "rows.csv:1:1: $.jobs[0].rows: CSV file has a header but no rows\n"


def test_csv_unterminated_quote(run, hermetic: Path) -> None:
    (hermetic / "rows.csv").write_text('sku,product\nmug,"red mug\n')
    (hermetic / "m.yaml").write_text(
        "version: 1\njobs:\n  - id: '{sku}'\n    prompt: p {product}\n"
        "    images: ['https://cdn.example.com/{sku}.png']\n    rows: rows.csv\n"
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.code == 2
    assert result.err == (
        "rows.csv:2:1: $.jobs[0].rows: malformed CSV: a quoted field is never closed\n"
    )


ROWS_MANIFEST = (
    "version: 1\njobs:\n  - id: '{sku}'\n    prompt: p\n"
    "    images: ['https://cdn.example.com/{sku}.png']\n    rows: %s\n"
)


def test_a_symlink_to_a_csv_outside_the_folder_is_refused(run, hermetic: Path) -> None:
    outside = hermetic.parent / "outside.csv"
    outside.write_text("sku\nmug\n")
    (hermetic / "rows.csv").symlink_to(outside)
    (hermetic / "m.yaml").write_text(ROWS_MANIFEST % "rows.csv")
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.err) == (
        2,
        "m.yaml:6:11: $.jobs[0].rows: 'rows.csv' is outside the manifest's folder; a rows CSV "
        "file must be in that folder or below it\n",
    )
    planned = run(["ruxa-batch", "plan", "m.yaml"])
    assert planned.code == 2 and "outside the manifest's folder" in planned.err


def test_an_absolute_csv_path_is_refused(run, hermetic: Path) -> None:
    (hermetic / "m.yaml").write_text(ROWS_MANIFEST % "/etc/hostname")
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.code == 2
    assert result.err == (
        "m.yaml:6:11: $.jobs[0].rows: '/etc/hostname' is outside the manifest's folder; a rows "
        "CSV file must be in that folder or below it\n"
    )


def test_csv_files_in_subfolders_and_links_inside_the_folder_are_fine(run, hermetic: Path) -> None:
    (hermetic / "data").mkdir()
    (hermetic / "data" / "rows.csv").write_text("sku\nmug\n")
    (hermetic / "link.csv").symlink_to(hermetic / "data" / "rows.csv")
    (hermetic / "a.yaml").write_text(ROWS_MANIFEST % "data/rows.csv")
    (hermetic / "b.yaml").write_text(ROWS_MANIFEST % "data/../link.csv")
    result = run(["ruxa-batch", "validate", "a.yaml", "b.yaml"])
    assert (result.code, result.out) == (0, "a.yaml: ok, 1 job\nb.yaml: ok, 1 job\n")


def test_a_dotenv_file_as_rows_never_shows_its_values(run, hermetic: Path) -> None:
    (hermetic / ".env").write_text("RUXA_API_KEY=live-123 456\nOTHER=sk-live-0123456789abcdefXY\n")
    (hermetic / "m.yaml").write_text(ROWS_MANIFEST % ".env")
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.code == 2
    assert result.err.splitlines() == [
        ".env:1:1: $.jobs[0].rows: column 1 of the header names a secret; the API key belongs in "
        "the RUXA_API_KEY environment variable, never in a file that goes into git",
        ".env:2:1: $.jobs[0].rows: this value looks like a Ruxa API key; keys belong in the "
        "RUXA_API_KEY environment variable, never in a file that goes into git",
    ]


def test_many_keys_in_a_csv_are_summarised(run, hermetic: Path) -> None:
    keys = "".join(f"p{i},sk-test-{i:020d}\n" for i in range(6))
    (hermetic / "rows.csv").write_text("sku,note\n" + keys)
    (hermetic / "m.yaml").write_text(ROWS_MANIFEST % "rows.csv")
    result = run(["ruxa-batch", "validate", "m.yaml"])
    lines = result.err.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        "rows.csv:2:2",
        "rows.csv:3:2",
        "rows.csv:4:2",
        "rows.csv:5:2",
    ]
    assert lines[-1] == (
        "rows.csv:5:2: $.jobs[0].rows: ... and 3 more cells that look like secrets"
    )
    assert "sk-test" not in result.err


def test_one_bad_manifest_does_not_stop_the_others(run, data_dir: Path) -> None:
    result = run(
        [
            "ruxa-batch",
            "validate",
            "data/misspelled_key.yaml",
            "data/valid_minimal.yaml",
            "data/empty.yaml",
        ]
    )
    assert result.code == 2
    assert result.out == "data/valid_minimal.yaml: ok, 1 job\n"
    assert result.err.splitlines() == [
        "data/" + EXPECTED["misspelled_key.yaml"][0],
        "data/" + EXPECTED["empty.yaml"][0],
        "2 of 3 manifests are invalid",
    ]


def test_a_non_finite_integer_setting_is_one_problem(run, hermetic) -> None:
    (hermetic / "nan.yaml").write_text(
        "version: 1\nrun:\n  max_attempts: .nan\njobs:\n  - id: a\n    prompt: p\n"
        "    images: [https://x.example/a.png]\n"
    )
    result = run(["ruxa-batch", "validate", "nan.yaml"])
    assert (result.code, result.err) == (
        2,
        "nan.yaml:3:17: $.run.max_attempts: must be a finite number, not .inf or .nan\n",
    )
