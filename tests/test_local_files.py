"""Local pictures in a manifest: paths, files: globs, where they may come from, what they may be,
how they count in a job's identity, and what validate and plan say about them (no network)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from ruxa_batch import manifest_files
from ruxa_batch.jobs import identity_key
from ruxa_batch.local_files import (
    BaseUrlSpec,
    ChangedOnDisk,
    CommandSpec,
    LocalFile,
    LocalRules,
    S3Spec,
    is_url,
    size_text,
    sniff,
)
from ruxa_batch.manifest import load_manifest
from ruxa_batch.manifest_files import FileReader
from ruxa_batch.manifest_problems import ProblemLog
from ruxa_batch.sandbox.images import render
from ruxa_batch.uploads import url_lifetime
from ruxa_batch.yamlsource import load_yaml

MODEL = "google/nano-banana-edit"
OUTSIDE_MESSAGE = (
    "outside the allowed folders: a local image must be in the manifest's folder or below it, "
    "or under a root listed in local_images.roots"
)
# The smallest headers the kind sniffing takes: the rest of the bytes do not matter to it.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(32)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(32)


def png(key: str = "mug", size: int = 8) -> bytes:
    return render(key, width=size, height=size, fmt="png")


def picture(path: Path, data: bytes | None = None) -> Path:
    """Write a picture (a PNG drawn from its name unless ``data``) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(path.name) if data is None else data)
    return path


def write(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_job(images: str, extra: str = "") -> str:
    """A manifest of one job sending ``images`` (a YAML flow list's inside)."""
    return f"version: 1\n{extra}jobs:\n  - id: mug\n    prompt: p\n    images: [{images}]\n"


def globbed(files: str, extra: str = "", entry: str = "") -> str:
    """A manifest of one entry expanded over ``files`` (a YAML value)."""
    return (
        f"version: 1\n{extra}jobs:\n  - id: '{{stem}}'\n    prompt: p\n    images: ['{{file}}']\n"
        f"    files: {files}\n{entry}"
    )


def plan_json(run: Any, path: str) -> dict[str, Any]:
    result = run(["ruxa-batch", "plan", path, "--format", "json"])
    assert result.code == 0, result.err
    document: dict[str, Any] = json.loads(result.out)
    return document


# -- what validates ---------------------------------------------------------------------------------


def test_local_paths_of_each_kind_validate_told_by_bytes(run, hermetic: Path) -> None:
    picture(hermetic / "photos" / "mug.png")
    picture(hermetic / "photos" / "shot.jpeg", JPEG)
    picture(hermetic / "photos" / "label.dat", WEBP)  # the name says nothing; the bytes do
    picture(hermetic / "photos" / "really-a-jpeg.png", JPEG)
    write(
        hermetic,
        one_job(
            "photos/mug.png, ./photos/shot.jpeg, photos/../photos/label.dat, "
            "photos/really-a-jpeg.png, 'https://cdn.example.com/bg.png'"
        ),
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.out, result.err) == (0, "m.yaml: ok, 1 job\n", "")
    (job,) = load_manifest(hermetic / "m.yaml").jobs
    assert [image.ext if isinstance(image, LocalFile) else image for image in job.images] == [
        "png",
        "jpg",
        "webp",
        "jpg",
        "https://cdn.example.com/bg.png",
    ]
    assert job.image_names == (
        "photos/mug.png",
        "photos/shot.jpeg",
        "photos/label.dat",
        "photos/really-a-jpeg.png",
        "https://cdn.example.com/bg.png",
    )


def test_a_files_glob_expands_in_sorted_order_with_double_star(run, hermetic: Path) -> None:
    # Written in reverse order: the order of the jobs is the paths', not the disk's.
    for name in ("photos/sub/deep/d.png", "photos/sub/c.png", "photos/b.png", "photos/a.png"):
        picture(hermetic / name)
    write(hermetic, "notes\n", "photos/readme.txt")
    (hermetic / "photos" / "empty.png").mkdir()  # a folder named like a picture: not a match
    write(hermetic, globbed("'photos/**/*.png'"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.out) == (0, "m.yaml: ok, 4 jobs\n")
    jobs = load_manifest(hermetic / "m.yaml").jobs
    assert [job.id for job in jobs] == ["a", "b", "c", "d"]
    assert [job.image_names for job in jobs] == [
        ("photos/a.png",),
        ("photos/b.png",),
        ("photos/sub/c.png",),
        ("photos/sub/deep/d.png",),
    ]
    again = load_manifest(hermetic / "m.yaml").jobs
    assert [job.key for job in again] == [job.key for job in jobs]


def test_file_stem_and_name_variables(hermetic: Path) -> None:
    picture(hermetic / "photos" / "Red Mug.v2.png")
    write(
        hermetic,
        "version: 1\njobs:\n  - id: 'x-{stem}'\n    prompt: '{file} | {stem} | {name}'\n"
        "    images: ['{file}']\n    files: 'photos/*.png'\n",
    )
    (job,) = load_manifest(hermetic / "m.yaml").jobs
    assert job.id == "x-red-mug-v2"
    assert job.prompt == "photos/Red Mug.v2.png | Red Mug.v2 | Red Mug.v2.png"


def test_a_list_of_patterns_gives_each_file_once_sorted_by_path(hermetic: Path) -> None:
    for name in ("a", "b", "c"):
        picture(hermetic / "photos" / f"{name}.png")
    write(hermetic, globbed("['photos/c.png', 'photos/*.png']"))
    assert [job.id for job in load_manifest(hermetic / "m.yaml").jobs] == ["a", "b", "c"]


def test_files_times_rows_times_matrix(run, hermetic: Path) -> None:
    for name in ("a", "b", "c"):
        picture(hermetic / "photos" / f"{name}.png")
    write(
        hermetic,
        "version: 1\njobs:\n  - id: '{stem}-{sku}-{style}'\n    prompt: '{sku} on {style}'\n"
        "    images: ['{file}']\n    files: 'photos/*.png'\n"
        "    rows: [{sku: mug}, {sku: cup}]\n    matrix: {style: [oak, marble]}\n",
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.out) == (0, "m.yaml: ok, 12 jobs\n")
    ids = [job.id for job in load_manifest(hermetic / "m.yaml").jobs]
    assert ids[:5] == ["a-mug-oak", "a-mug-marble", "a-cup-oak", "a-cup-marble", "b-mug-oak"]
    assert len(set(ids)) == 12


def test_two_files_sharing_a_stem_point_the_id_at_file(run, hermetic: Path) -> None:
    picture(hermetic / "front" / "mug.png", png("front"))
    picture(hermetic / "back" / "mug.png", png("back"))
    write(hermetic, globbed("'*/mug.png'"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.err) == (
        2,
        "m.yaml:3:9: $.jobs[0].id: duplicate id 'mug' (first from jobs[0] (file=back/mug.png), "
        "line 3); put {file} in the id template: files in different folders can share their "
        "{stem} and {name}\n",
    )
    write(hermetic, globbed("'*/mug.png'").replace("id: '{stem}'", "id: '{file}'"))
    ids = [job.id for job in load_manifest(hermetic / "m.yaml").jobs]
    assert ids == ["back-mug-png", "front-mug-png"]


def test_a_globbed_file_whose_name_looks_like_a_scheme_stays_a_path(hermetic: Path) -> None:
    picture(hermetic / "shot:1.png")
    write(hermetic, globbed("'shot*.png'"))
    (job,) = load_manifest(hermetic / "m.yaml").jobs
    assert job.image_names == ("./shot:1.png",)  # never read as a URL in results or the report


def test_a_named_file_that_looks_like_a_scheme_gets_a_hint(run, hermetic: Path) -> None:
    picture(hermetic / "shot:1.png")
    write(hermetic, one_job("shot:1.png"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.code == 2
    assert result.err.endswith(
        "'shot:1.png' is not an http(s) URL; for the local file of that name write ./shot:1.png\n"
    )


def test_a_file_in_an_extra_root_is_allowed_and_shown_absolute(run, hermetic: Path) -> None:
    shared = picture(hermetic.parent / "shared" / "logo.png")
    extra = "local_images:\n  roots: [../shared]\n"
    write(hermetic, one_job(str(shared), extra), "abs.yaml")
    write(hermetic, one_job("../shared/logo.png", extra), "rel.yaml")
    write(hermetic, globbed(f"'{shared.parent}/*.png'", extra), "glob.yaml")
    result = run(["ruxa-batch", "validate", "abs.yaml", "rel.yaml", "glob.yaml"])
    assert (result.code, result.err) == (0, "")
    (job,) = load_manifest(hermetic / "glob.yaml").jobs
    assert job.image_names == (str(shared.resolve()),)


def test_links_inside_the_folder_to_files_inside_it_are_fine(run, hermetic: Path) -> None:
    target = picture(hermetic / "photos" / "mug.png")
    (hermetic / "latest.png").symlink_to(target)
    write(hermetic, one_job("latest.png"))
    assert run(["ruxa-batch", "validate", "m.yaml"]).code == 0
    (job,) = load_manifest(hermetic / "m.yaml").jobs
    assert job.image_names == ("photos/mug.png",)  # the file itself


def test_upload_sections_are_read(hermetic: Path) -> None:
    picture(hermetic / "mug.png")
    write(hermetic, one_job("mug.png", "upload:\n  s3: {bucket: my-bucket}\n"), "s3.yaml")
    write(
        hermetic,
        one_job(
            "mug.png", "upload:\n  command: [rclone, copyto, '{path}', 'r:x/{sha256}.{ext}']\n"
        ),
        "command.yaml",
    )
    write(
        hermetic, one_job("mug.png", "upload:\n  base_url: https://cdn.example.com/in\n"), "b.yaml"
    )
    s3 = load_manifest(hermetic / "s3.yaml").upload
    command = load_manifest(hermetic / "command.yaml").upload
    base = load_manifest(hermetic / "b.yaml").upload
    assert s3 is not None and s3.method == S3Spec("my-bucket") and url_lifetime(s3) == 86_400
    assert command is not None and isinstance(command.method, CommandSpec)
    assert command.url_lifetime is None
    assert base is not None and base.method == BaseUrlSpec("https://cdn.example.com/in/")


# -- where a picture may come from -----------------------------------------------------------------


def test_a_link_inside_the_folder_to_a_file_outside_is_refused(run, hermetic: Path) -> None:
    outside = picture(hermetic.parent / "elsewhere" / "secret.png")
    (hermetic / "photos").mkdir()
    (hermetic / "photos" / "innocent.png").symlink_to(outside)
    write(hermetic, one_job("photos/innocent.png"), "path.yaml")
    write(hermetic, globbed("'photos/*.png'"), "glob.yaml")
    result = run(["ruxa-batch", "validate", "path.yaml", "glob.yaml"])
    assert result.code == 2
    assert result.err.splitlines() == [
        f"path.yaml:5:14: $.jobs[0].images[0]: 'photos/innocent.png': {OUTSIDE_MESSAGE}",
        "glob.yaml:6:12: $.jobs[0].files: 'photos/*.png' matches only files outside the "
        "manifest's folder and its allowed roots (local_images.roots)",
        "2 of 2 manifests are invalid",
    ]


def test_a_linked_folder_inside_pointing_outside_is_refused(run, hermetic: Path) -> None:
    picture(hermetic.parent / "elsewhere" / "secret.png")
    (hermetic / "photos").symlink_to(hermetic.parent / "elsewhere")
    write(hermetic, one_job("photos/secret.png"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.err) == (
        2,
        f"m.yaml:5:14: $.jobs[0].images[0]: 'photos/secret.png': {OUTSIDE_MESSAGE}\n",
    )


def test_an_absolute_path_outside_is_refused_and_a_root_allows_it(run, hermetic: Path) -> None:
    shared = picture(hermetic.parent / "shared" / "logo.png")
    write(hermetic, one_job(str(shared)), "refused.yaml")
    write(hermetic, one_job(str(shared), f"local_images:\n  roots: ['{shared.parent}']\n"))
    refused = run(["ruxa-batch", "validate", "refused.yaml"])
    assert refused.code == 2
    # (a long path is shortened in the middle; the message around it is exact)
    assert refused.err.startswith("refused.yaml:5:14: $.jobs[0].images[0]: '/")
    assert refused.err.endswith(f"': {OUTSIDE_MESSAGE}\n")
    assert len(refused.err.splitlines()) == 1
    assert run(["ruxa-batch", "validate", "m.yaml"]).code == 0


def test_a_root_does_not_allow_its_neighbours(run, hermetic: Path) -> None:
    picture(hermetic.parent / "shared-not" / "logo.png")
    write(hermetic, one_job("../shared-not/logo.png", "local_images:\n  roots: [../shared]\n"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.code == 2 and OUTSIDE_MESSAGE in result.err


def test_base_url_refuses_a_file_from_an_extra_root(run, hermetic: Path) -> None:
    shared = picture(hermetic.parent / "shared" / "logo.png")
    write(
        hermetic,
        one_job(
            "../shared/logo.png",
            "local_images:\n  roots: [../shared]\nupload:\n  base_url: https://cdn.example.com/\n",
        ),
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.err) == (
        2,
        "m.yaml:5:13: $.upload.base_url: base_url publishes the manifest's folder, but job 'mug' "
        f"sends {shared.resolve()}, which is outside it\n",
    )


def test_a_home_path_is_outside_unless_a_root(run, hermetic: Path) -> None:
    picture(Path(os.environ["HOME"]) / "Pictures" / "cat.png")
    write(hermetic, one_job("~/Pictures/cat.png"), "refused.yaml")
    write(hermetic, one_job("~/Pictures/cat.png", "local_images:\n  roots: ['~/Pictures']\n"))
    assert run(["ruxa-batch", "validate", "refused.yaml"]).code == 2
    assert run(["ruxa-batch", "validate", "m.yaml"]).code == 0


# -- what a picture may be -------------------------------------------------------------------------


def test_a_fifo_is_refused_without_reading_it(run, hermetic: Path) -> None:
    os.mkfifo(hermetic / "pipe.png")  # opening it to read would block until a writer came
    write(hermetic, one_job("pipe.png"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.err) == (
        2,
        "m.yaml:5:14: $.jobs[0].images[0]: 'pipe.png': not a regular file\n",
    )


def test_a_symlink_loop_is_a_located_problem(run, hermetic: Path) -> None:
    (hermetic / "a.png").symlink_to(hermetic / "b.png")
    (hermetic / "b.png").symlink_to(hermetic / "a.png")
    write(hermetic, one_job("a.png"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.code == 2
    assert result.err.startswith("m.yaml:5:14: $.jobs[0].images[0]: 'a.png': ")
    assert len(result.err.splitlines()) == 1


def test_a_file_at_the_cap_passes_and_one_byte_more_does_not(run, hermetic: Path) -> None:
    data = png()
    cap = len(data) / 1_000_000
    picture(hermetic / "at.png", data)
    picture(hermetic / "over.png", data + b"\x00")
    extra = f"local_images:\n  max_file_mb: {cap!r}\n"
    write(hermetic, one_job("at.png", extra), "at.yaml")
    write(hermetic, one_job("over.png", extra), "over.yaml")
    assert run(["ruxa-batch", "validate", "at.yaml"]).code == 0
    over = run(["ruxa-batch", "validate", "over.yaml"])
    assert (over.code, over.err) == (
        2,
        f"over.yaml:7:14: $.jobs[0].images[0]: 'over.png': too large: {len(data) + 1:,} bytes, "
        f"over the cap of {len(data):,} bytes (local_images.max_file_mb: {cap:g})\n",
    )


def test_the_default_cap_is_10_mb(run, hermetic: Path) -> None:
    picture(hermetic / "big.png", png()[:8] + bytes(10_000_001))
    write(hermetic, one_job("big.png"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.err == (
        "m.yaml:5:14: $.jobs[0].images[0]: 'big.png': too large: 10,000,009 bytes, over the cap "
        "of 10,000,000 bytes (local_images.max_file_mb: 10)\n"
    )


def test_a_glob_that_matches_a_text_file_refuses_that_expansion(run, hermetic: Path) -> None:
    picture(hermetic / "photos" / "a.png")
    write(hermetic, "notes\n", "photos/notes.txt")
    write(hermetic, globbed("'photos/*'"))
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.err) == (
        2,
        "m.yaml:5:14: $.jobs[0].images[0]: 'photos/notes.txt': not a picture: its bytes are not "
        "PNG, JPEG or WebP, whatever its name in jobs[0] (file=photos/notes.txt)\n",
    )


def test_looping_links_under_double_star_stop_at_the_cap(run, hermetic: Path) -> None:
    picture(hermetic / "photos" / "a.png")
    # Two links back to their own folder: ** would walk 2**40 paths.
    (hermetic / "photos" / "x").symlink_to(".")
    (hermetic / "photos" / "y").symlink_to(".")
    write(hermetic, globbed("'photos/**/*.png'"))
    started = time.perf_counter()
    result = run(["ruxa-batch", "validate", "--max-jobs", "1000", "m.yaml"])
    assert time.perf_counter() - started < 5
    assert (result.code, result.err) == (
        2,
        "m.yaml:6:12: $.jobs[0].files: 'photos/**/*.png' matches more than 1,000 paths (a "
        "symbolic link back to its own folder makes ** endless); raise --max-jobs if that is "
        "intended\n",
    )


def test_a_missing_file_in_many_jobs_is_summarised(run, hermetic: Path) -> None:
    values = ", ".join(str(n) for n in range(1000))
    write(
        hermetic,
        "version: 1\njobs:\n  - id: 'mug-{n}'\n    prompt: 'p {n}'\n    images: [gone.png]\n"
        f"    matrix: {{n: [{values}]}}\n",
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert result.code == 2
    assert result.err.splitlines() == [
        "m.yaml:5:14: $.jobs[0].images[0]: 'gone.png': no such file in jobs[0] (n=0)",
        "m.yaml:5:14: $.jobs[0].images[0]: 'gone.png': no such file in jobs[0] (n=1)",
        "m.yaml:5:14: $.jobs[0].images[0]: 'gone.png': no such file in jobs[0] (n=2)",
        "m.yaml:5:14: $.jobs[0].images[0]: ... and 997 more expansions with the same problem "
        "(missing file)",
    ]


def test_a_bad_picture_in_many_jobs_is_summarised_too(run, hermetic: Path) -> None:
    write(hermetic, "not a picture\n", "fake.png")
    values = ", ".join(str(n) for n in range(50))
    write(
        hermetic,
        "version: 1\njobs:\n  - id: 'mug-{n}'\n    prompt: 'p {n}'\n    images: [fake.png]\n"
        f"    matrix: {{n: [{values}]}}\n",
    )
    lines = run(["ruxa-batch", "validate", "m.yaml"]).err.splitlines()
    assert len(lines) == 4
    assert lines[-1] == (
        "m.yaml:5:14: $.jobs[0].images[0]: ... and 47 more expansions with the same problem "
        "(not a picture)"
    )


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (png()[:12], "image/png"),
        (JPEG[:12], "image/jpeg"),
        (WEBP[:12], "image/webp"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00", None),
        (b"RIFF\x24\x00\x00\x00AVI ", None),
        (b"\x89PNG", None),
        (b"", None),
    ],
)
def test_kind_is_told_by_the_first_bytes(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("https://cdn.example.com/a.png", True),
        ("s3://bucket/a.png", True),
        ("shot:1.png", True),
        ("./shot:1.png", False),
        ("photos/a.png", False),
        ("C:\\photos\\a.png", False),
        ("/abs/a.png", False),
    ],
)
def test_what_reads_as_a_url(text: str, url: bool) -> None:
    assert is_url(text) is url


# -- identity --------------------------------------------------------------------------------------


def test_renaming_or_moving_a_picture_keeps_the_keys_editing_it_does_not(run, hermetic) -> None:
    photo = picture(hermetic / "mug.png")
    write(hermetic, one_job("mug.png"))
    before = plan_json(run, "m.yaml")["jobs"][0]["key"]

    moved = hermetic / "photos" / "2026" / "renamed.png"
    moved.parent.mkdir(parents=True)
    photo.rename(moved)
    write(hermetic, one_job("photos/2026/renamed.png"))
    after_move = plan_json(run, "m.yaml")
    assert after_move["jobs"][0]["key"] == before
    assert after_move["jobs"][0]["images"] == ["photos/2026/renamed.png"]

    data = bytearray(moved.read_bytes())
    data[-1] ^= 1  # one byte, past the header: still a PNG to the sniffing
    moved.write_bytes(bytes(data))
    assert plan_json(run, "m.yaml")["jobs"][0]["key"] != before


def test_the_key_is_that_of_the_request_with_the_file_by_sha256(hermetic: Path) -> None:
    photo = picture(hermetic / "mug.png")
    write(hermetic, one_job("mug.png, 'https://cdn.example.com/bg.png'"))
    (job,) = load_manifest(hermetic / "m.yaml").jobs
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    stored = {
        "prompt": "p",
        "image_urls": [f"sha256:{digest}", "https://cdn.example.com/bg.png"],
        "output_format": "png",
        "image_size": "1:1",
    }
    assert job.key == identity_key(MODEL, stored, 1)


def test_a_url_only_job_keeps_the_key_it_had_before_local_pictures(hermetic: Path) -> None:
    write(hermetic, one_job("'https://x.example/i.png'"))
    (job,) = load_manifest(hermetic / "m.yaml").jobs
    stored = {
        "prompt": "p",
        "image_urls": ["https://x.example/i.png"],
        "output_format": "png",
        "image_size": "1:1",
    }
    # The value test_manifest pins for this request: every state file made before holds it.
    assert job.key == identity_key(MODEL, stored, 1) == "5934c41e99e665284cccc926"


def test_the_same_bytes_under_two_names_are_one_request_and_one_file(run, hermetic) -> None:
    data = png("same")
    picture(hermetic / "front.png", data)
    picture(hermetic / "copy" / "front-again.png", data)
    write(
        hermetic,
        "version: 1\njobs:\n  - id: a\n    prompt: p\n    images: [front.png]\n"
        "  - id: b\n    prompt: p\n    images: [copy/front-again.png]\n",
        "same.yaml",
    )
    same = run(["ruxa-batch", "validate", "same.yaml"])
    assert (same.code, same.err) == (
        2,
        "same.yaml:6:9: $.jobs[1].id: job 'b' sends exactly the same request as job 'a' "
        "(jobs[0], line 3): copy/front-again.png and front.png hold the same bytes; delete one "
        "copy, or put {name} in the prompt to make them two requests\n",
    )
    write(
        hermetic,
        "version: 1\njobs:\n  - id: a\n    prompt: on oak\n    images: [front.png]\n"
        "  - id: b\n    prompt: on marble\n    images: [copy/front-again.png]\n",
    )
    plan = plan_json(run, "m.yaml")
    assert plan["local_files"] == {"count": 1, "bytes": len(data)}
    assert [job["images"] for job in plan["jobs"]] == [["front.png"], ["copy/front-again.png"]]


# -- plan: offline, counting, hashing once ---------------------------------------------------------


def test_plan_needs_no_network_no_key_and_no_upload_section(
    run, hermetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("plan opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert "RUXA_API_KEY" not in os.environ
    a = picture(hermetic / "photos" / "a.png", png("a", 64))
    b = picture(hermetic / "photos" / "b.png", JPEG)
    write(
        hermetic,
        "version: 1\njobs:\n  - id: '{stem}-{style}'\n    prompt: '{style}'\n"
        "    images: ['{file}', photos/a.png]\n    files: 'photos/*'\n"
        "    matrix: {style: [oak, marble, slate]}\n",
    )
    size = a.stat().st_size + b.stat().st_size
    text = run(["ruxa-batch", "plan", "m.yaml"])
    assert text.code == 0, text.err
    assert (
        f"Local pictures to publish: 2 distinct files, {size_text(size)} "
        "(each once; URLs an earlier run recorded are reused)"
    ) in text.out.splitlines()
    document = plan_json(run, "m.yaml")
    assert document["local_files"] == {"count": 2, "bytes": size}
    assert document["totals"] == {"submit": 6}
    markdown = run(["ruxa-batch", "plan", "m.yaml", "--format", "markdown"])
    assert "Local pictures to publish: 2 distinct files" in markdown.out


def test_a_url_only_plan_says_nothing_of_local_pictures(run, hermetic: Path) -> None:
    write(hermetic, one_job("'https://x.example/i.png'"))
    assert "Local pictures" not in run(["ruxa-batch", "plan", "m.yaml"]).out
    assert plan_json(run, "m.yaml")["local_files"] == {"count": 0, "bytes": 0}


def test_a_thousand_jobs_over_fifty_files_hash_each_file_once(
    run, hermetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(50):
        picture(hermetic / "photos" / f"p{number:02d}.png")
    hashed: list[Path] = []
    real_hash = manifest_files.hash_file

    def counting(path: Path) -> tuple[str, int]:
        hashed.append(path)
        return real_hash(path)

    monkeypatch.setattr(manifest_files, "hash_file", counting)
    styles = ", ".join(f"s{n}" for n in range(20))
    write(
        hermetic,
        "version: 1\njobs:\n  - id: '{stem}-{style}'\n    prompt: '{style}'\n"
        # Each file also named a second way, by a fixed path: still one read.
        "    images: ['{file}', './photos/../photos/p00.png']\n    files: 'photos/*.png'\n"
        f"    matrix: {{style: [{styles}]}}\n",
    )
    result = run(["ruxa-batch", "validate", "m.yaml"])
    assert (result.code, result.out) == (0, "m.yaml: ok, 1,000 jobs\n")
    assert len(hashed) == 50
    assert len(set(hashed)) == 50


def test_the_file_reader_caches_by_resolved_path(hermetic: Path) -> None:
    picture(hermetic / "photos" / "a.png")
    (hermetic / "alias.png").symlink_to(hermetic / "photos" / "a.png")
    manifest = write(hermetic, "version: 1\njobs: []\n")
    log = ProblemLog(load_yaml(manifest, display="m.yaml"))
    reader = FileReader(hermetic, LocalRules((hermetic.resolve(),)), log)
    first = reader.local("photos/a.png", ("jobs", 0), "")
    assert first is not None
    assert reader.local("./photos/../photos/a.png", ("jobs", 1), "") is first
    assert reader.local("alias.png", ("jobs", 2), "") is first
    assert len(reader._files) == 1 and not log.problems


def test_a_file_changed_after_reading_is_caught_before_sending(hermetic: Path) -> None:
    photo = picture(hermetic / "mug.png")
    write(hermetic, one_job("mug.png"))
    (job,) = load_manifest(hermetic / "m.yaml").jobs
    (local,) = job.local_files
    assert local.read() == photo.read_bytes()
    photo.write_bytes(png("another"))
    with pytest.raises(ChangedOnDisk, match=r"^mug\.png changed on disk"):
        local.read()


def test_a_recursive_glob_never_takes_in_the_runs_own_outputs(run, hermetic: Path) -> None:
    picture(hermetic / "shoot" / "a.png")
    write(hermetic, globbed("'**/*.png'"))
    # Pictures a run left in the output folders (real and sandbox) are not inputs.
    for folder in ("out/m", "out/m.sandbox", "out/m.sandbox/uploads"):
        picture(hermetic / folder / "a-1.png", data=png(folder))
    assert [job.id for job in load_manifest(hermetic / "m.yaml").jobs] == ["a"]
