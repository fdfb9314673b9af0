"""Every input checked up front: config files, paths, torchrun's variables, seeds, worker counts
and the causes of failed writes each give one line naming what is wrong, never a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from progan.config.schema import TrainConfig
from progan.errors import ProganError

from helpers import TINY_ARGS, invoke, one_line_error

# Terminals that cannot encode a path: a UTF-8 one strict about encoding (what Python sets up in
# a UTF-8 locale such as en_US.UTF-8) meets a name with a byte that is not UTF-8, a Latin-1 one
# meets Cyrillic. Printing the path raised UnicodeEncodeError.
STRICT_UTF8 = {"PYTHONIOENCODING": "utf-8:strict"}
LATIN1 = {"PYTHONIOENCODING": "latin-1"}


def progan(*args, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``progan ARGS`` in a process of its own (its stdout encoding is set by ``env``)."""
    argv = [os.fsencode(str(a)) for a in args]  # a path's bytes as they are, not UTF-8 or not
    return subprocess.run(
        [sys.executable.encode(), b"-m", b"progan", *argv],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, face_store) -> Path:
    """A finished run at 4x4 (32 images: checkpoints at 16 and 32)."""
    from progan.train.loop import train

    run = tmp_path_factory.mktemp("tiny") / "run"
    train(
        TrainConfig(
            data=str(face_store),
            res_max=4,
            fmap_base=64,
            fmap_max=16,
            latent_dim=16,
            minibatch={4: 8},
            kimg_stable=0.032,
            tick_kimg=0.016,
            snapshot_ticks=1,
            image_ticks=1,
            device="cpu",
            data_workers=0,
            grid_size=4,
        ),
        run,
        log=lambda msg: None,
    )
    return run


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


# --- config files --------------------------------------------------------------------------------


@pytest.mark.parametrize("content, needles", [
    (b'seed = 1\nname = "caf\xe9"\n', ["not UTF-8", "byte 0xe9 on line 2"]),
    (b"seed = = 1\n", ["not valid TOML", "line 1"]),
])  # fmt: skip
def test_a_config_file_that_is_not_utf8_or_not_toml_is_one_line_naming_it(
    face_store, tmp_path, content, needles
):
    config = tmp_path / "mine.toml"
    config.write_bytes(content)
    result = invoke(
        "train", "--config", config, "--data", face_store, "--run-dir", tmp_path / "run", *TINY_ARGS
    )
    one_line_error(result, f"config file '{config}'", *needles)
    assert not (tmp_path / "run").exists()


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path):
    from progan.config.files import load_toml

    config = tmp_path / "windows.toml"
    config.write_bytes(b"\xef\xbb\xbfseed = 7\n")  # what Notepad saves
    assert load_toml(config) == {"seed": 7}


@pytest.mark.parametrize("content, needle", [
    (b'seed = 1\ndata = "\xff\xfe"\n', "not UTF-8"),
    (b"seed = [\n", "not valid TOML"),
])  # fmt: skip
def test_a_damaged_saved_config_is_one_line_that_says_the_checkpoint_has_one(
    run_copy, content, needle
):
    (run_copy / "config.toml").write_bytes(content)
    result = invoke("train", "--run-dir", run_copy, "--resume")
    one_line_error(
        result,
        f"'{run_copy / 'config.toml'}'",
        needle,
        "move it away",
        "config saved in its newest checkpoint",
    )


# --- paths ----------------------------------------------------------------------------------------

LONG = "a" * 300  # one name over the 255 bytes file systems allow


@pytest.mark.parametrize("args, label", [
    (["train", "--data", "{store}", "--run-dir", LONG], "--run-dir"),
    (["train", "--data", "{store}", "--run-dir", f"x/{LONG}/y"], "--run-dir"),
    (["train", "--data", LONG, "--run-dir", "run"], "--data"),
    (["train", "--config", LONG, "--data", "{store}", "--run-dir", "run"], "--config"),
    (["train", "--resume", "--run-dir", LONG], "--run-dir"),
    (["prepare-lmdb", "src", LONG], "OUT"),
    (["prepare-lmdb", LONG, "out.lmdb"], "SRC"),
    (["info", LONG], "STORE"),
    (["generate", LONG, "--out", "gen"], "CHECKPOINT"),
    (["generate", "{run}", "--out", LONG], "--out"),
    (["metrics", LONG, "--metrics", "swd"], "CHECKPOINT|RUN_DIR"),
    (["swd", "{run}", "--ref", LONG], "--ref"),
    (["import-official", LONG, "--run-dir", "imported"], "NETWORK.pkl"),
    (["import-official", "net.pkl", "--run-dir", LONG], "--run-dir"),
])  # fmt: skip
def test_a_path_name_longer_than_the_file_system_allows_is_one_line_naming_the_option(
    face_store, tiny_run, tmp_path, monkeypatch, args, label
):
    monkeypatch.chdir(tmp_path)
    args = [a.format(store=face_store, run=tiny_run) for a in args]
    one_line_error(
        invoke(*args, *(TINY_ARGS if args[0] == "train" else [])),
        f"{label}: the name",
        "300 bytes",
        "255",
    )
    assert sorted(os.listdir(tmp_path)) == []


def test_a_name_made_from_a_path_that_is_too_long_is_one_line_naming_the_option(
    tmp_path, monkeypatch
):
    from progan.store import writer as prepare

    out = tmp_path / ("b" * 250)  # fits; what progan appends to it (a temporary's suffix) may not

    def too_long(src, out, **options):
        raise OSError(errno.ENAMETOOLONG, "File name too long", f"{out}.partial-12345")

    monkeypatch.setattr(prepare, "prepare_lmdb", too_long)
    one_line_error(
        invoke("prepare-lmdb", tmp_path, out),
        f"OUT '{out}'",
        "a file name progan makes from it is longer than the file system allows",
    )


@pytest.fixture
def undecodable(tmp_path) -> tuple[Path, str]:
    """A folder whose name holds a byte that is not UTF-8 (Python sees a surrogate), with 8 images."""
    from progan.store.demo import make_demo_images

    name = os.fsdecode(b"faces-\xff")
    make_demo_images(tmp_path / name, n=8, size=8, seed=5)
    return tmp_path, name


@pytest.mark.slow
def test_stores_prepare_and_print_from_folders_whose_names_are_not_utf8(undecodable):
    root, name = undecodable
    made = progan(
        "prepare-lmdb",
        name,
        f"{name}.lmdb",
        "--res-max",
        "8",
        "--workers",
        "0",
        env=STRICT_UTF8,
        cwd=root,
    )
    assert made.returncode == 0 and b"Traceback" not in made.stderr, made.stderr.decode()
    assert b"stored 8 images" in made.stdout
    shown = progan("info", f"{name}.lmdb", env=STRICT_UTF8, cwd=root)
    assert shown.returncode == 0, shown.stderr.decode()
    assert b"store:      faces-\\udcff.lmdb" in shown.stdout  # escaped, as file names are


@pytest.mark.slow
def test_a_name_the_terminal_cannot_encode_is_printed_escaped(face_store, tmp_path):
    shutil.copytree(face_store, tmp_path / "лица.lmdb")
    shown = progan("info", "лица.lmdb", env=LATIN1, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr.decode()
    assert b"store:      \\u043b\\u0438\\u0446\\u0430.lmdb" in shown.stdout


def test_train_refuses_data_or_a_run_directory_whose_name_is_not_utf8(undecodable, face_store):
    root, name = undecodable
    shutil.copytree(face_store, root / f"{name}.lmdb")
    for args, label in (
        (["--data", root / f"{name}.lmdb", "--run-dir", root / "run"], "--data"),
        (["--data", face_store, "--run-dir", root / name / "run"], "--run-dir"),
    ):
        one_line_error(invoke("train", *args, *TINY_ARGS), label, "not UTF-8", "rename it")
    assert not (root / "run").exists() and not (root / name / "run").exists()


def test_generate_writes_into_a_folder_whose_name_is_not_utf8(tiny_run, undecodable):
    root, name = undecodable
    result = invoke("generate", tiny_run, "--out", root / name / "gen", "--n", "2", env=STRICT_UTF8)
    assert result.exit_code == 0, result.output
    assert len(list((root / name / "gen").glob("*.png"))) == 2


# --- torchrun's variables -----------------------------------------------------------------------

NO_JOB = {
    k: None
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
}


@pytest.mark.parametrize("env, needles", [
    ({"WORLD_SIZE": "two"}, ["WORLD_SIZE='two'", "integer >= 1"]),
    ({"WORLD_SIZE": "0", "RANK": "0"}, ["WORLD_SIZE='0'", "integer >= 1"]),
    ({"WORLD_SIZE": "2", "RANK": "1.5"}, ["RANK='1.5'", "integer >= 0"]),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, ["RANK='-1'", "integer >= 0"]),
    ({"WORLD_SIZE": "2", "RANK": "2"}, ["RANK=2 is not below WORLD_SIZE=2", "0 to 1"]),
    ({"LOCAL_RANK": "x"}, ["LOCAL_RANK='x'"]),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"},
     ["LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"]),
    ({"RANK": "0"}, ["RANK='0' is set but WORLD_SIZE is not"]),
    ({"WORLD_SIZE": "2"}, ["WORLD_SIZE=2 is set but RANK is not"]),
    ({"WORLD_SIZE": "2", "RANK": "0"}, ["MASTER_ADDR is not set"]),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "localhost"}, ["MASTER_PORT is not set"]),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "localhost", "MASTER_PORT": "http"},
     ["MASTER_PORT='http'", "1 to 65535"]),
])  # fmt: skip
def test_unusable_torchrun_variables_are_one_line_naming_the_variable(
    face_store, tmp_path, env, needles
):
    result = invoke(
        "train",
        "--data",
        face_store,
        "--run-dir",
        tmp_path / "run",
        *TINY_ARGS,
        env={**NO_JOB, **env},
    )
    one_line_error(result, "environment variable", *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "1e9"])
def test_the_rendezvous_timeout_must_be_a_positive_number_of_seconds(face_store, tmp_path, seconds):
    result = invoke(
        "train",
        "--data",
        face_store,
        "--run-dir",
        tmp_path / "run",
        *TINY_ARGS,
        "--dist-timeout",
        seconds,
        env=NO_JOB,
    )
    one_line_error(result, "--dist-timeout must be a number of seconds", "604800")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_rendezvous_whose_peers_never_come_ends_after_the_timeout_with_one_line(
    face_store, tmp_path
):
    env = {
        "WORLD_SIZE": "2",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    done = progan(
        "train",
        "--data",
        face_store,
        "--run-dir",
        tmp_path / "run",
        *TINY_ARGS,
        "--dist-timeout",
        "1",
        env=env,
        cwd=tmp_path,
    )  # waits for the process to end
    err = done.stderr.decode()
    assert done.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(
        "error: rank 0: the job's 2 processes did not all join at "
        f"127.0.0.1:{env['MASTER_PORT']} within --dist-timeout 1 s"
    ), err
    assert not (tmp_path / "run").exists()


# --- seeds ----------------------------------------------------------------------------------------

SEED_MAX = 2**32 - 1  # the seeds every random stream tells apart
OUT_OF_RANGE = [-1, SEED_MAX + 1, 2**63, 2**64]


@pytest.mark.parametrize("seed", OUT_OF_RANGE)
def test_train_refuses_a_seed_out_of_range(face_store, tmp_path, seed):
    result = invoke(
        "train", "--data", face_store, "--run-dir", tmp_path / "run", *TINY_ARGS, "--seed", seed
    )
    one_line_error(result, "seed must be an integer from 0 to 4294967295", f"got {seed}")
    config = tmp_path / "c.toml"
    config.write_text(f"seed = {seed}\n")
    result = invoke(
        "train", "--config", config, "--data", face_store, "--run-dir", tmp_path / "run", *TINY_ARGS
    )
    one_line_error(result, "seed must be an integer from 0 to 4294967295", f"got {seed}")
    assert not (tmp_path / "run").exists()


def test_the_largest_seed_trains(face_store, tmp_path):
    result = invoke(
        "train",
        "--data",
        face_store,
        "--run-dir",
        tmp_path / "run",
        *TINY_ARGS,
        "--seed",
        SEED_MAX,
        "--res-max",
        "4",
        "--batch",
        "8",
        "--total-kimg",
        "0.016",
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("seed", OUT_OF_RANGE)
@pytest.mark.parametrize("option", ["--seed", "--mix-rows", "--mix-cols"])
def test_generate_refuses_a_seed_out_of_range(tiny_run, tmp_path, option, seed):
    args = {
        "--seed": ["--seed", seed],
        "--mix-rows": ["--mix-rows", f"1,{seed}", "--mix-cols", "2"],
        "--mix-cols": ["--mix-rows", "1", "--mix-cols", f"{seed},3"],
    }[option]
    result = invoke("generate", tiny_run, "--out", tmp_path / "gen", "--n", "2", *args)
    one_line_error(result, f"{option} must be an integer from 0 to 4294967295", f"got {seed}")
    assert not (tmp_path / "gen").exists()


@pytest.mark.parametrize(
    "command", [["swd", "--n", "16"], ["fid", "--n", "16"], ["metrics", "--metrics", "swd"]]
)
@pytest.mark.parametrize("seed", [-1, 2**64])
def test_metrics_refuse_a_seed_out_of_range(run_copy, face_store, command, seed):
    before = sorted(p.name for p in (run_copy / "checkpoints").iterdir())
    result = invoke(command[0], run_copy, *command[1:], "--ref", face_store, "--seed", seed)
    one_line_error(result, "--seed must be an integer from 0 to 4294967295", f"got {seed}")
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == before


# --- worker processes -----------------------------------------------------------------------------


def test_train_refuses_more_workers_than_the_machine_can_run(face_store, tmp_path):
    most = 4 * (os.cpu_count() or 1)
    result = invoke(
        "train",
        "--data",
        face_store,
        "--run-dir",
        tmp_path / "run",
        *TINY_ARGS,
        "--workers",
        "1000000",
    )  # the last --workers counts
    one_line_error(result, "--workers", f"from 0 to {most}", "got 1000000")
    assert not (tmp_path / "run").exists()
    one_line_error(
        invoke("prepare-lmdb", tmp_path, tmp_path / "o.lmdb", "--workers", "-1"),
        "--workers must be from 0",
    )


# --- why a write failed ---------------------------------------------------------------------------


def _errno_text_of_writing_into(folder: Path) -> str:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError as e:
        return e.strerror
    os.close(fd)
    os.unlink(name)
    pytest.skip(f"'{folder}' is writable here")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_write_into_a_folder_that_takes_no_files_names_its_errno_not_a_full_disk():
    from progan.fileio import write_failure
    from progan.train import checkpoint as ckpt

    folder = Path("/proc/self")  # a file system without free space that takes no new files
    cause = _errno_text_of_writing_into(folder)
    with pytest.raises(ProganError) as e:
        ckpt.atomic_save({"x": 1}, folder / "ckpt-000000000016.pt")
    assert f": {cause};" in str(e.value) and "space" not in str(e.value), e.value
    # torch.save's "file write failed" has no errno: a write into the folder finds it.
    torch_failure = RuntimeError(
        "PytorchStreamWriter failed writing file data/0: file write failed"
    )
    line = str(write_failure("checkpoint 'x'", folder, torch_failure))
    assert f": {cause} (PytorchStreamWriter" in line and "space" not in line, line


def test_a_failed_store_write_is_not_blamed_on_a_full_disk(tmp_path):
    import lmdb

    from progan.store import writer as prepare

    class Refusing:
        def begin(self, write):
            raise lmdb.ReadonlyError("mdb_txn_begin: Permission denied")

    with pytest.raises(ProganError) as e:
        prepare._write(Refusing(), [(b"k", b"v")], tmp_path / "out.lmdb")
    assert "Permission denied" in str(e.value) and "disk full" not in str(e.value)
